/**
 * Resolving `--host H` to an agent address: a unix socket path (H contains `/`), TCP
 * `ADDR:PORT` (`[v6]:PORT` for IPv6), or the name of a testbed host, whose socket is read
 * from `$GODWIT_TESTBED_DIR/testbed.json`.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ErrorCode, InvalidArgumentError, NotFoundError, errorMessage } from '../core/errors.js';
import { TESTBED_FILE } from '../core/testbed.js';
import type { AgentAddress } from './client.js';
import { absolutePath, array, integer, object, string } from './schema.js';

/** Where the current testbed's description lives unless GODWIT_TESTBED_DIR says otherwise. */
export const DEFAULT_TESTBED_DIR = '/run/godwit/testbed';

/** The testbed directory: `$GODWIT_TESTBED_DIR` or the default. */
export function testbedDir(env: NodeJS.ProcessEnv = process.env): string {
  return env['GODWIT_TESTBED_DIR'] || DEFAULT_TESTBED_DIR;
}

/** Parses `ADDR:PORT` / `[V6]:PORT`; undefined when `s` does not have that shape. */
export function parseHostPort(s: string): { host: string; port: number } | undefined {
  const m = /^\[([0-9A-Fa-f:.]+)\]:(\d{1,5})$/.exec(s) ?? /^([^:/[\]\s]+):(\d{1,5})$/.exec(s);
  if (!m || m[1] === undefined || m[2] === undefined) return undefined;
  const port = Number(m[2]);
  if (port > 65_535) return undefined;
  return { host: m[1], port };
}

/** The part of testbed.json the CLI needs (the rest belongs to the testbed). */
const testbedHosts = object(
  {
    hosts: array(
      object({ name: string({ minLength: 1 }), socket: absolutePath() }, { unknownFields: 'keep' }),
    ),
    version: integer(1, 1),
  },
  { unknownFields: 'keep' },
);

/** Resolves `--host`; fails with HostNotFound (naming the known hosts) for an unknown name. */
export async function resolveAgentAddress(
  host: string,
  env: NodeJS.ProcessEnv = process.env,
): Promise<AgentAddress> {
  if (host.includes('/')) return { socketPath: host };
  const hp = parseHostPort(host);
  if (hp) return hp;
  if (host.includes(':')) {
    throw new InvalidArgumentError(
      ErrorCode.InvalidFlag,
      `--host ${host}: expected ADDR:PORT with a port 0..65535`,
    );
  }
  const file = join(testbedDir(env), TESTBED_FILE);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    throw new NotFoundError(
      ErrorCode.HostNotFound,
      `no host named ${host}: there is no testbed (${file} is missing)`,
      {
        hint: 'give a socket path or ADDR:PORT, or start a testbed with `godwit testbed up`',
      },
    );
  }
  let hosts: { name: string; socket: string }[];
  try {
    hosts = testbedHosts.parse(JSON.parse(text) as unknown, '').hosts;
  } catch (err) {
    throw new InvalidArgumentError(
      ErrorCode.InvalidState,
      `${file} is not a usable testbed description: ${errorMessage(err)}`,
    );
  }
  const found = hosts.find((h) => h.name === host);
  if (!found) {
    throw new NotFoundError(ErrorCode.HostNotFound, `no testbed host named ${host}`, {
      hint:
        hosts.length === 0
          ? `the testbed in ${file} has no hosts`
          : `known hosts: ${hosts.map((h) => h.name).join(', ')}`,
    });
  }
  return { socketPath: found.socket };
}
