/**
 * Fault suite: the server's data dir fills up (a small tmpfs; needs root to
 * mount one, otherwise skipped with a visible message). Writes past the full
 * disk must be refused, never acknowledged; every acknowledged write must stay
 * readable; once space is back, writes succeed again without a restart, and a
 * restart loses nothing.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { http, startServerProcess, type ServerProcess } from '../helpers/server-process.ts';

function canMountTmpfs(): string | false {
  if (process.getuid?.() !== 0) return 'needs root to mount a small tmpfs; run the fault suite as root (CI does) to cover disk full';
  return false;
}

test('disk full: writes refused (never acknowledged), acknowledged writes kept, recovery without a restart', { skip: canMountTmpfs() }, async (t) => {
  const mountPoint = await mkdtemp(join(tmpdir(), 'cs-diskfull-'));
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=3m,mode=0700', 'tmpfs', mountPoint]);
  } catch (err) {
    t.skip(`cannot mount a tmpfs here (${(err as Error).message.split('\n')[0]}); disk full not covered`);
    await rm(mountPoint, { recursive: true, force: true });
    return;
  }
  let server: ServerProcess | undefined;
  t.after(async () => {
    await server?.stop('SIGKILL');
    execFileSync('umount', ['-l', mountPoint]);
    await rm(mountPoint, { recursive: true, force: true });
  });
  const dataDir = join(mountPoint, 'data');
  server = await startServerProcess({ dataDir });
  const { kek, rootToken: token } = server;
  const blob = (i: number) => `${String(i).padStart(6, '0')}-${'x'.repeat(64 * 1024)}`;
  const acked: number[] = [];
  const refused: Array<{ status: number; code: string }> = [];
  for (let i = 0; i < 200 && refused.length < 3; i++) {
    const res = await http(server.httpUrl, 'PUT', `/v1/items/full/app/k${i}`, { token, body: { kind: 'config', value: blob(i) } });
    if (res.status === 200) acked.push(i);
    else refused.push({ status: res.status, code: res.json?.error?.code });
  }
  t.diagnostic(`tried: 64 KiB config values into a 3 MiB data dir; ${acked.length} acknowledged, then refused with ${refused.map((r) => `${r.status} ${r.code}`).join(', ')}`);
  assert.ok(refused.length > 0, 'the disk filled up');
  for (const r of refused) assert.ok(r.status >= 500 && r.status < 600, `a write on a full disk is a 5xx, not ${r.status}`);
  for (const i of acked) {
    const res = await http(server.httpUrl, 'GET', `/v1/items/full/app/k${i}`, { token });
    assert.equal(res.json?.value, blob(i), `acknowledged k${i} is readable while the disk is full`);
  }
  // Config reads need no audit row; secret reads fail closed while audit rows cannot be written.
  t.diagnostic(`held: all ${acked.length} acknowledged values read back while the disk is full; /readyz answers ${(await http(server.adminUrl, 'GET', '/readyz')).status}`);

  execFileSync('mount', ['-o', 'remount,size=64m', mountPoint]);
  const again = await http(server.httpUrl, 'PUT', '/v1/items/full/app/after', { token, body: { kind: 'secret', value: 'space-is-back' } });
  assert.equal(again.status, 200, `a write succeeds once space is back, without a restart: ${again.text}`);
  const deadline = Date.now() + 10_000;
  let ready = 0;
  while (Date.now() < deadline && ready !== 200) {
    ready = (await http(server.adminUrl, 'GET', '/readyz')).status;
    if (ready !== 200) await new Promise((resolve) => setTimeout(resolve, 100));
  }
  assert.equal(ready, 200, '/readyz is ready again once audit rows can be written');
  t.diagnostic('tried: grew the tmpfs to 64 MiB; held: the next write succeeded and /readyz was ready again, without a restart');

  await server.stop('SIGKILL');
  server = await startServerProcess({ dataDir, kek, rootToken: token });
  for (const i of acked) {
    const res = await http(server.httpUrl, 'GET', `/v1/items/full/app/k${i}`, { token });
    assert.equal(res.json?.value, blob(i), `acknowledged k${i} survived kill -9 after the disk-full episode`);
  }
  assert.equal((await http(server.httpUrl, 'GET', '/v1/items/full/app/after', { token })).json?.value, 'space-is-back');
  t.diagnostic(`held: after kill -9 and restart all ${acked.length + 1} acknowledged writes read back`);
});
