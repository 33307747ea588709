/**
 * A testbed for migration tests: hosts with agents and a client, brought up before the suite's
 * tests and torn down after, and the helpers every migration test needs. Call inside `describe`.
 * Its agents accept injected failures (GODWIT_FAULT_INJECTION=1).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before } from 'node:test';
import { AgentClient } from '../../src/agent/client.js';
import type { MigrationReport } from '../../src/core/migration.js';
import { ContainerStatus } from '../../src/core/runtime.js';
import type { LinkSpec, TestbedHost, TestbedInfo } from '../../src/core/testbed.js';
import { verifyMemory, waitListening } from '../../src/demo/migration-demo.js';
import { migrateThrough, type MigrationRequest } from '../../src/migration/client.js';
import { testbedDown, testbedUp } from '../../src/testbed/testbed.js';

/** The testbed of a suite and what its tests do with it. Valid once `before` has run. */
export interface MigrationTestbed {
  readonly tb: TestbedInfo;
  host(i: number): { h: TestbedHost; a: AgentClient };
  /** Runs `args` as `cname` on host i, waits until it listens; returns its service address (IP:8080). */
  start(i: number, cname: string, args: string[]): Promise<string>;
  /** memload's verdict on its whole memory, asked for now. */
  verifyNow(i: number, cname: string): Promise<string>;
  /** The hosts (indexes) on which `cname` is running. */
  runningOn(cname: string): Promise<number[]>;
  migrate(from: number, to: number, req: Omit<MigrationRequest, 'to'>): Promise<MigrationReport>;
}

/** Brings up `hosts` hosts on `link` (and `pairLinks`) before the suite, down after it. */
export function useMigrationTestbed(o: {
  name: string;
  hosts: number;
  link: LinkSpec;
  pairLinks?: Record<string, LinkSpec>;
  /** Environment of the testbed's agents (set while they start). */
  env?: Record<string, string>;
}): MigrationTestbed {
  let dir: string;
  let tb: TestbedInfo | undefined;
  let agents: AgentClient[] = [];
  before(async () => {
    // The agents inherit it: the suite's migrations may ask for injected failures.
    process.env['GODWIT_FAULT_INJECTION'] = '1';
    dir = await mkdtemp(join(tmpdir(), `godwit-${o.name}-`));
    const saved = Object.fromEntries(Object.keys(o.env ?? {}).map((k) => [k, process.env[k]]));
    Object.assign(process.env, o.env ?? {});
    tb = await testbedUp({
      name: o.name,
      hosts: o.hosts,
      link: o.link,
      ...(o.pairLinks ? { pairLinks: o.pairLinks } : {}),
      client: true,
      startAgents: true,
      godwitBin: resolve('bin/godwit.js'),
      dir,
      baseStateDir: join(dir, 'hosts'),
    });
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
    agents = tb.hosts.map((h) => new AgentClient({ socketPath: h.socket }));
  });
  after(async () => {
    for (const a of agents) a.close();
    await testbedDown({ name: o.name, dir });
    await rm(dir, { recursive: true, force: true });
  });
  const info = (): TestbedInfo => {
    if (!tb) throw new Error('the testbed is not up');
    return tb;
  };
  const host = (i: number): { h: TestbedHost; a: AgentClient } => ({ h: info().hosts[i]!, a: agents[i]! });
  return {
    get tb() {
      return info();
    },
    host,
    async start(i, cname, args) {
      const c = await host(i).a.run({ name: cname, image: 'busybox', args, env: {} });
      await waitListening(host(i).a, cname);
      return `${c.network!.ip}:8080`;
    },
    async verifyNow(i, cname) {
      const line = await verifyMemory(host(i).a, cname, 30_000);
      if (line === undefined) throw new Error(`${cname} on h${i + 1} gave no verdict`);
      return line;
    },
    async runningOn(cname) {
      const out: number[] = [];
      for (let i = 0; i < agents.length; i++) {
        const c = await host(i)
          .a.inspect(cname)
          .catch(() => undefined);
        if (c?.status === ContainerStatus.Running) out.push(i);
      }
      return out;
    },
    migrate(from, to, req) {
      const dst = host(to).h;
      return migrateThrough(host(from).a, {
        ...req,
        to: { host: dst.address, port: dst.port, label: dst.name },
      });
    },
  };
}
