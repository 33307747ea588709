import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  debootstrapErrors,
  decisiveCheckLines,
  findDebianMirror,
  parseDpkgStatusVersion,
  provisionedCriuWrapper,
  resolveDebianMirror,
  shellQuote,
  systemCriuWrapper,
} from './provision.js';

const deb822Bookworm = `Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
# http://snapshot.debian.org/archive/debian-security/20250520T000000Z
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
`;

const nodesource = `Types: deb
URIs: https://deb.nodesource.com/node_20.x
Suites: nodistro
Components: main
Architectures: amd64
Signed-By: /usr/share/keyrings/nodesource.gpg
`;

describe('findDebianMirror', () => {
  it('reads the deb822 format and skips security and third-party entries', () => {
    const mirror = findDebianMirror([
      { path: '/etc/apt/sources.list.d/nodesource.sources', text: nodesource },
      { path: '/etc/apt/sources.list.d/debian.sources', text: deb822Bookworm },
      {
        path: '/etc/apt/sources.list.d/google.list',
        text: 'deb https://packages.cloud.google.com/apt cloud-sdk-bookworm main\n',
      },
    ]);
    assert.equal(mirror, 'http://deb.debian.org/debian');
  });

  it('reads the one-line format with options and comments', () => {
    const text = [
      '# deb http://commented.example/debian bookworm main',
      'deb-src http://src.example/debian bookworm main',
      'deb http://security.debian.org/debian-security bookworm-security main',
      'deb [arch=amd64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://ftp.de.debian.org/debian/ bookworm main contrib',
      'deb http://ftp.de.debian.org/debian/ bookworm-updates main',
    ].join('\n');
    assert.equal(
      findDebianMirror([{ path: '/etc/apt/sources.list', text }]),
      'http://ftp.de.debian.org/debian',
    );
  });

  it('prefers a bare codename entry over -updates', () => {
    const mirror = findDebianMirror([
      { path: 'a.list', text: 'deb http://updates.example/debian bookworm-updates main\n' },
      { path: 'b.list', text: 'deb http://main.example/debian bookworm main\n' },
    ]);
    assert.equal(mirror, 'http://main.example/debian');
  });

  it('accepts -updates when it is all there is', () => {
    assert.equal(
      findDebianMirror([{ path: 'a.list', text: 'deb http://updates.example/debian trixie-updates main\n' }]),
      'http://updates.example/debian',
    );
  });

  it('skips disabled deb822 stanzas and handles continuation lines', () => {
    const text = `Types: deb
URIs: http://disabled.example/debian
Suites: bookworm
Enabled: no

Types: deb deb-src
URIs:
 https://mirror.example/debian
Suites: stable
Components: main
`;
    assert.equal(findDebianMirror([{ path: 'x.sources', text }]), 'https://mirror.example/debian');
  });

  it('returns undefined without a Debian entry', () => {
    assert.equal(findDebianMirror([]), undefined);
    assert.equal(findDebianMirror([{ path: 'n.sources', text: nodesource }]), undefined);
    assert.equal(
      findDebianMirror([{ path: 'u.list', text: 'deb http://archive.ubuntu.com/ubuntu jammy main\n' }]),
      undefined,
    );
    assert.equal(
      findDebianMirror([{ path: 'c.list', text: 'deb cdrom:[Debian]/ bookworm main\n' }]),
      undefined,
    );
  });
});

describe('resolveDebianMirror', () => {
  it('prefers the explicit option, then GODWIT_DEBIAN_MIRROR', async () => {
    const saved = process.env['GODWIT_DEBIAN_MIRROR'];
    try {
      process.env['GODWIT_DEBIAN_MIRROR'] = 'http://env.example/debian/';
      assert.deepEqual(await resolveDebianMirror('http://opt.example/debian'), {
        mirror: 'http://opt.example/debian',
        from: 'option',
      });
      assert.deepEqual(await resolveDebianMirror(), { mirror: 'http://env.example/debian', from: 'env' });
      await assert.rejects(resolveDebianMirror('not a url'), { code: 'GODWIT_INVALID_FLAG' });
    } finally {
      if (saved === undefined) delete process.env['GODWIT_DEBIAN_MIRROR'];
      else process.env['GODWIT_DEBIAN_MIRROR'] = saved;
    }
  });
});

describe('parseDpkgStatusVersion', () => {
  const status = `Package: criu-dev
Status: install ok installed
Version: 9.9

Package: criu
Status: install ok installed
Priority: optional
Depends: libbsd0 (>= 0.6.0),
 libc6 (>= 2.38)
Version: 4.2.1-1

Package: gone
Status: deinstall ok config-files
Version: 1.0
`;
  it('finds the installed version of the named package only', () => {
    assert.equal(parseDpkgStatusVersion(status, 'criu'), '4.2.1-1');
    assert.equal(parseDpkgStatusVersion(status, 'criu-dev'), '9.9');
    assert.equal(parseDpkgStatusVersion(status, 'gone'), undefined);
    assert.equal(parseDpkgStatusVersion(status, 'absent'), undefined);
  });
});

describe('wrappers', () => {
  it('runs a provisioned criu through its own loader', () => {
    const script = provisionedCriuWrapper('/var/lib/godwit/tools/criu-root', '4.2.1', 'x64');
    assert.match(script, /^#!\/bin\/sh\n/);
    assert.ok(
      script.includes(
        'exec /var/lib/godwit/tools/criu-root/lib64/ld-linux-x86-64.so.2 --library-path ' +
          '/var/lib/godwit/tools/criu-root/lib/x86_64-linux-gnu:/var/lib/godwit/tools/criu-root/usr/lib/x86_64-linux-gnu ' +
          '/var/lib/godwit/tools/criu-root/usr/sbin/criu "$@"',
      ),
    );
  });
  it('quotes awkward paths', () => {
    assert.equal(shellQuote('/plain/path'), '/plain/path');
    assert.equal(shellQuote("/a b/it's"), `'/a b/it'\\''s'`);
    assert.ok(systemCriuWrapper('/opt/my criu/criu', '4.2').includes(`exec '/opt/my criu/criu' "$@"`));
  });
});

describe('decisiveCheckLines', () => {
  it('picks error lines from a failed check', () => {
    const out =
      'Warn (criu/kerndat.c:1): something\nError (criu/vdso.c:200): vdso: Unexpected rt vDSO area bounds\nmore\n';
    assert.deepEqual(decisiveCheckLines(out, false), [
      'Error (criu/vdso.c:200): vdso: Unexpected rt vDSO area bounds',
    ]);
  });
  it('falls back to the last lines', () => {
    assert.deepEqual(decisiveCheckLines('a\nb\n', false), ['a', 'b']);
    assert.deepEqual(decisiveCheckLines('Looks good.\n', true), ['Looks good.']);
  });
});

describe('debootstrapErrors', () => {
  it('puts E: lines first and appends the new lines of the log', () => {
    const out = 'I: Retrieving InRelease\nE: Failed getting release file http://x/dists/forky/Release\n';
    assert.deepEqual(
      debootstrapErrors(out, ['E: Failed getting release file http://x/dists/forky/Release', 'ERROR 404']),
      ['E: Failed getting release file http://x/dists/forky/Release', 'ERROR 404'],
    );
  });
});
