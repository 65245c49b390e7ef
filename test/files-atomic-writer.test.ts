import { test } from 'node:test';
import assert from 'node:assert/strict';
import { lstatSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AtomicWriter, nodeWriterFs, PublishError, type FileContent, type WriterFs } from '../src/agent/files/atomic-writer.ts';
import { startSnapshotReader } from './helpers/files-reader-run.ts';

function tempDir(t: { after(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'files-writer-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function payload(entries: Record<string, string>, mode = 0o440): Map<string, FileContent> {
  return new Map(Object.entries(entries).map(([path, text]) => [path, { data: Buffer.from(text), mode }]));
}

function snapshots(dir: string): string[] {
  return readdirSync(dir).filter((n) => /^\.\.\d{4}_/.test(n));
}

test('publication layout: snapshot dir, ..data link, user-visible links through ..data, modes applied', async (t) => {
  const dir = tempDir(t);
  const writer = new AtomicWriter(join(dir, 'files'));
  const files = new Map<string, FileContent>([
    ['app/.env', { data: Buffer.from("A='1'\n"), mode: 0o440 }],
    ['tls.pem', { data: Buffer.from('pem'), mode: 0o640 }],
  ]);
  const first = await writer.publish(files);
  const root = join(dir, 'files');
  assert.match(readlinkSync(join(root, '..data')), /^\.\.\d{4}_\d{2}_\d{2}_\d{2}_\d{2}_\d{2}\./);
  assert.equal(readlinkSync(join(root, 'app')), '..data/app');
  assert.equal(readlinkSync(join(root, 'tls.pem')), '..data/tls.pem');
  assert.equal(readFileSync(join(root, 'app/.env'), 'utf8'), "A='1'\n");
  assert.equal(statSync(join(root, 'app/.env')).mode & 0o777, 0o440);
  assert.equal(statSync(join(root, 'tls.pem')).mode & 0o777, 0o640);
  assert.deepEqual(snapshots(root), [first.snapshot]);
  // The app containers' group must traverse every level (mkdtemp alone gives 0700).
  assert.equal(statSync(join(root, first.snapshot as string)).mode & 0o777, 0o755);
  assert.equal(statSync(join(root, first.snapshot as string, 'app')).mode & 0o777, 0o755);

  // Unchanged payload: nothing written. One changed file: the other is hard-linked from the old snapshot.
  assert.equal((await writer.publish(files)).changed, false);
  const oldInode = statSync(join(root, 'tls.pem')).ino;
  const second = await writer.publish(new Map([...files, ['app/.env', { data: Buffer.from("A='2'\n"), mode: 0o440 }]]));
  assert.deepEqual(second.written, ['app/.env']);
  assert.deepEqual(second.linked, ['tls.pem']);
  assert.equal(statSync(join(root, 'tls.pem')).ino, oldInode);
  assert.deepEqual(snapshots(root), [second.snapshot], 'the old snapshot is removed after the swap');

  // A removed entry's link disappears; a foreign file in the directory is left alone.
  writeFileSync(join(root, 'not-ours.txt'), 'x');
  await writer.publish(new Map([['tls.pem', { data: Buffer.from('pem'), mode: 0o640 }]]));
  assert.throws(() => lstatSync(join(root, 'app')), /ENOENT/);
  assert.equal(readFileSync(join(root, 'not-ours.txt'), 'utf8'), 'x');
});

test('a reader resolving ..data once never sees a mix of two publications across 200 rapid publications', async (t) => {
  const dir = tempDir(t);
  const writer = new AtomicWriter(dir);
  await writer.publish(payload({ 'a.txt': 'gen=0\n', 'nested/b.txt': 'gen=0\n' }));
  const reader = startSnapshotReader(t, dir, ['a.txt', 'nested/b.txt'], /gen=(\d+)/);
  for (let gen = 1; gen <= 200; gen++) {
    // Different lengths too, so a half-written file would also show.
    await writer.publish(payload({ 'a.txt': `gen=${gen}\n${'x'.repeat(gen * 37)}`, 'nested/b.txt': `gen=${gen}\n` }));
  }
  const report = await reader.stop();
  assert.deepEqual(report.mixes, []);
  assert.ok(report.reads > 0);
  assert.ok(report.distinct > 1, 'the reader raced the writer across publications');
  assert.equal(snapshots(dir).length, 1);
});

test('an injected write failure (ENOSPC, EACCES) rejects, leaves the last good snapshot visible and no debris', async (t) => {
  for (const code of ['ENOSPC', 'EACCES']) {
    const dir = tempDir(t);
    let failing = false;
    const fs: WriterFs = {
      ...nodeWriterFs,
      async writeFile(path, data, mode) {
        if (failing && path.endsWith('b.txt')) throw Object.assign(new Error(`${code}: injected`), { code });
        await nodeWriterFs.writeFile(path, data, mode);
      },
    };
    const writer = new AtomicWriter(dir, { fs });
    const good = await writer.publish(payload({ 'a.txt': 'good-a', 'b.txt': 'good-b' }));
    failing = true;
    await assert.rejects(writer.publish(payload({ 'a.txt': 'new-a', 'b.txt': 'new-b' })), (e: unknown) => e instanceof PublishError && e.code === code && /b\.txt/.test(e.message));
    assert.equal(readFileSync(join(dir, 'a.txt'), 'utf8'), 'good-a');
    assert.equal(readFileSync(join(dir, 'b.txt'), 'utf8'), 'good-b');
    assert.deepEqual(snapshots(dir), [good.snapshot]);
    assert.ok(!readdirSync(dir).includes('..data_tmp'));
    failing = false;
    await writer.publish(payload({ 'a.txt': 'new-a', 'b.txt': 'new-b' }));
    assert.equal(readFileSync(join(dir, 'b.txt'), 'utf8'), 'new-b', 'the writer recovers once the disk does');
  }
});

test('a file changed by hand inside the snapshot is rewritten, not hard-linked, on the next publication', async (t) => {
  const dir = tempDir(t);
  const writer = new AtomicWriter(dir);
  await writer.publish(payload({ 'a.txt': 'a', 'b.txt': 'b' }, 0o640));
  writeFileSync(join(dir, 'a.txt'), 'tampered');
  const result = await writer.publish(payload({ 'a.txt': 'a', 'b.txt': 'b' }, 0o640));
  assert.equal(result.changed, true);
  assert.deepEqual(result.written, ['a.txt']);
  assert.equal(readFileSync(join(dir, 'a.txt'), 'utf8'), 'a');
});
