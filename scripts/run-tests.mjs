// Runs godwit's tests with node:test (through tsx, as Node 20 cannot strip types).
// Usage: node scripts/run-tests.mjs unit|integration|all [FILTER]
// Unit tests are src/**/*.test.ts; integration tests (root, runc, CRIU) are test/integration/**/*.test.ts.
// Files run one at a time: integration tests share the machine's kernel state.
import { spawnSync } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

const kind = process.argv[2] ?? 'all';
const filter = process.argv[3];
if (!['unit', 'integration', 'all'].includes(kind)) {
  console.error('usage: node scripts/run-tests.mjs unit|integration|all [FILTER]');
  process.exit(2);
}

function find(dir) {
  let out = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out = out.concat(find(p));
    else if (name.endsWith('.test.ts')) out.push(p);
  }
  return out;
}

let files = [];
if (kind !== 'integration') files = files.concat(find('src'));
if (kind !== 'unit') files = files.concat(find('test/integration'));
files = files.filter((f) => !filter || f.includes(filter)).sort();
if (files.length === 0) {
  console.error(`no test files for ${kind}${filter ? ` matching ${filter}` : ''}`);
  process.exit(1);
}
const res = spawnSync(
  process.execPath,
  ['--import', 'tsx', '--test', '--test-concurrency=1', '--test-timeout=600000', ...files],
  { stdio: 'inherit' },
);
process.exit(res.status ?? 1);
