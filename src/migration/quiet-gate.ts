/**
 * Keeps background work (persisting staged chunks: tens of thousands of file creations, seconds
 * of CPU) out of the way of a migration's critical phases. Migrations `hold` the gate while they
 * run; background loops `wait` for it between units of work. Measured: a previous migration's
 * flush running in the destination agent delayed a restore by about 3 s.
 */
export class QuietGate {
  private holds = 0;
  private waiters: (() => void)[] = [];

  /** Holds the gate until the returned function is called (idempotent). */
  hold(): () => void {
    this.holds++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      if (--this.holds === 0) {
        const w = this.waiters;
        this.waiters = [];
        for (const f of w) f();
      }
    };
  }

  /** Whether some migration holds the gate. */
  get held(): boolean {
    return this.holds > 0;
  }

  /** Resolves once no one holds the gate. */
  wait(): Promise<void> {
    if (this.holds === 0) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push(resolve));
  }
}
