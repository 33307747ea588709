import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  criuLogPathFromRunc,
  criuVersionFromLog,
  decisiveLines,
  errorLines,
  parseCriuLog,
  parseRuncStderr,
} from './log.js';

// Lines taken from a real failed `runc checkpoint` on this machine kind (CRIU 4.2.1):
// the container's stdout was a host file, which CRIU cannot find in the container's mounts.
const FAILED_DUMP = `(00.000000) CRIU run id = 7a15476f-9caf-4aa1-81ad-bfe645406a65
(00.000054) Version: 4.2.1 (gitid 0)
(00.052575) Error (criu/util.c:1534): rlimit: Can't setup RLIMIT_NOFILE for self: Operation not permitted
(00.163500) Dumping opened files (pid: 7401)
(00.163569) Error (criu/files-reg.c:1790): Can't lookup mount=27 for fd=1 path=/tmp/proto/out.log
(00.163586) Error (criu/cr-dump.c:1545): Dump files (pid: 7401) failed with -1
(00.228117) Unfreezing tasks into 1
(00.228184) Error (criu/cr-dump.c:1975): Dumping FAILED.
`;

const RESTORE_OK = `(00.000000) CRIU run id = e0b8b6d8
(00.039372) Error (criu/util.c:1534): rlimit: Can't setup RLIMIT_NOFILE for self: Operation not permitted
(00.059669) Warn  (criu/cr-restore.c:1050): Set CLONE_PARENT | CLONE_NEWPID but it might cause restore problem,because not all kernels support such clone flags combinations!
(00.120000) Restore finished successfully. Tasks resumed.
`;

describe('parseCriuLog', () => {
  it('parses time, level, source and message', () => {
    const entries = parseCriuLog(FAILED_DUMP);
    assert.equal(entries.length, 8);
    assert.deepEqual(entries[4], {
      time: 0.163569,
      level: 'error',
      source: 'criu/files-reg.c:1790',
      message: "Can't lookup mount=27 for fd=1 path=/tmp/proto/out.log",
    });
    assert.equal(entries[3]?.level, 'info');
  });

  it('recognises Warn lines with two spaces', () => {
    const warn = parseCriuLog(RESTORE_OK).find((e) => e.level === 'warn');
    assert.equal(warn?.source, 'criu/cr-restore.c:1050');
  });

  it('takes an unstamped Error line as an entry of its own, at the time before it', () => {
    const entries = parseCriuLog(
      "Error (criu/page-xfer.c:83): Can't bind page server: Cannot assign requested address\n" +
        '(00.2) Error (a.c:1): first\nError (b.c:2): second, unstamped\n',
    );
    assert.deepEqual(
      entries.map((e) => [e.time, e.level, e.source, e.message]),
      [
        [0, 'error', 'criu/page-xfer.c:83', "Can't bind page server: Cannot assign requested address"],
        [0.2, 'error', 'a.c:1', 'first'],
        [0.2, 'error', 'b.c:2', 'second, unstamped'],
      ],
    );
  });

  it('errorLines: non-benign errors only, nothing when there are none', () => {
    const log =
      "(00.1) Error (criu/util.c:1534): rlimit: Can't setup RLIMIT_NOFILE for self: Operation not permitted\n" +
      '(00.2) Error (sk-inet.c:200): inet: Connected TCP socket\n(00.3) the end\n';
    assert.deepEqual(errorLines(log), ['Error (sk-inet.c:200): inet: Connected TCP socket']);
    assert.deepEqual(errorLines('(00.1) all fine\n'), []);
  });

  it('appends unprefixed lines to the previous entry', () => {
    const entries = parseCriuLog('(00.1) Error (a.c:1): first\n  continued\n');
    assert.equal(entries.length, 1);
    assert.equal(entries[0]?.message, 'first\ncontinued');
  });
});

describe('decisiveLines', () => {
  it('quotes the real errors and skips the benign rlimit one', () => {
    assert.deepEqual(decisiveLines(FAILED_DUMP), [
      "Error (criu/files-reg.c:1790): Can't lookup mount=27 for fd=1 path=/tmp/proto/out.log",
      'Error (criu/cr-dump.c:1545): Dump files (pid: 7401) failed with -1',
      'Error (criu/cr-dump.c:1975): Dumping FAILED.',
    ]);
  });

  it('falls back to the last lines when there is no error', () => {
    assert.deepEqual(decisiveLines('(00.1) a\n(00.2) b\n(00.3) c\n(00.4) d\n'), ['b', 'c', 'd']);
  });

  it('respects the maximum', () => {
    assert.equal(decisiveLines(FAILED_DUMP, 1).length, 1);
  });
});

describe('runc stderr', () => {
  const stderr =
    'time="2026-11-25T20:04:30Z" level=error msg="container still running"\n' +
    'time="2026-11-25T20:04:30Z" level=error msg="criu failed: type NOTIFY errno 0\\nlog file: /tmp/proto/work/dump.log"\n';

  it('unquotes msg and keeps the level', () => {
    const lines = parseRuncStderr(stderr);
    assert.equal(lines.length, 2);
    assert.equal(lines[0]?.msg, 'container still running');
    assert.equal(lines[1]?.msg, 'criu failed: type NOTIFY errno 0\nlog file: /tmp/proto/work/dump.log');
  });

  it('finds the CRIU log path', () => {
    assert.equal(criuLogPathFromRunc(stderr), '/tmp/proto/work/dump.log');
    assert.equal(criuLogPathFromRunc('plain failure'), undefined);
  });

  it('keeps lines in another form', () => {
    assert.deepEqual(parseRuncStderr('open /x: no such file'), [
      { level: 'unknown', msg: 'open /x: no such file' },
    ]);
  });
});

describe('criuVersionFromLog', () => {
  it('reads the Version line', () => {
    assert.equal(criuVersionFromLog(FAILED_DUMP), '4.2.1');
    assert.equal(criuVersionFromLog('nothing'), undefined);
  });
});
