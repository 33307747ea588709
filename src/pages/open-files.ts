/** File handles opened once per path, on first use, and closed together. */
import { open, type FileHandle } from 'node:fs/promises';

/** Handles by path, all opened with one mode (`r`, `r+`). */
export class OpenFiles {
  private readonly handles = new Map<string, Promise<FileHandle>>();

  constructor(private readonly mode: 'r' | 'r+') {}

  /** The handle of `path`, opened now if it is not yet (a failed open stays failed). */
  get(path: string): Promise<FileHandle> {
    let f = this.handles.get(path);
    if (!f) {
      f = open(path, this.mode);
      f.catch(() => undefined);
      this.handles.set(path, f);
    }
    return f;
  }

  /** Closes every handle opened so far. */
  async closeAll(): Promise<void> {
    const all = [...this.handles.values()];
    this.handles.clear();
    for (const f of all) await (await f.catch(() => undefined))?.close().catch(() => undefined);
  }
}
