import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ChangeSetAssembler } from '../src/agent/change-set-assembler.ts';
import type { WatchEvent } from '../src/shared/watch-proto.ts';

const member = (revision: number, setRevision: number, name = `k${revision}`): WatchEvent => ({
  type: 'itemChanged',
  revision,
  namespace: 'ns',
  name,
  kind: 'secret',
  version: 1,
  env: 'base',
  setRevision,
});
const heartbeat = (revision: number): WatchEvent => ({ type: 'heartbeat', revision, currentRevision: revision, intervalMs: 1000 });

function recorder() {
  const applied: Array<number | number[]> = [];
  const assembler = new ChangeSetAssembler({
    apply: (e) => applied.push(e.revision),
    applyBatch: (events) => applied.push(events.map((e) => e.revision)),
  });
  return { applied, assembler };
}

test('members are held until the member at the set revision, then applied as one batch; other events pass straight through', () => {
  const { applied, assembler } = recorder();
  assembler.offer(heartbeat(9));
  assembler.offer(member(10, 12));
  assembler.offer(member(11, 12));
  assert.deepEqual(applied, [9], 'nothing of the set applied yet');
  assert.equal(assembler.buffered, 2);
  assembler.offer(member(12, 12));
  assembler.offer({ type: 'itemChanged', revision: 13, namespace: 'ns', name: 'x', kind: 'config', version: 2, env: 'base' });
  assert.deepEqual(applied, [9, [10, 11, 12], 13]);
  assert.equal(assembler.buffered, 0);
});

test('a set whose last member is outside the prefixes completes at the bookmark, at a later event, or at the next set', () => {
  const bookmark = recorder();
  bookmark.assembler.offer(member(20, 22));
  bookmark.assembler.offer(member(21, 22));
  bookmark.assembler.offer(heartbeat(21));
  assert.deepEqual(bookmark.applied, [21], 'a bookmark inside the set does not complete it');
  bookmark.assembler.offer(heartbeat(22));
  assert.deepEqual(bookmark.applied, [21, [20, 21], 22]);

  const later = recorder();
  later.assembler.offer(member(30, 31));
  later.assembler.offer({ type: 'keyRotated', revision: 32, namespace: 'ns', keyVersion: 2 });
  assert.deepEqual(later.applied, [30, 32], 'a set of one in this stream is applied alone');

  const next = recorder();
  next.assembler.offer(member(40, 42));
  next.assembler.offer(member(43, 44));
  next.assembler.offer(member(44, 44));
  assert.deepEqual(next.applied, [40, [43, 44]]);
});

test('a lost stream or a resync drops a half-received set (the resumed stream sends it again)', () => {
  const { applied, assembler } = recorder();
  assembler.offer(member(50, 51));
  assembler.reset();
  assembler.offer(member(50, 51));
  assembler.offer(member(51, 51));
  assert.deepEqual(applied, [[50, 51]]);
  assembler.offer(member(60, 61));
  assembler.offer({ type: 'resyncRequired', revision: 70, oldestRevision: 65, currentRevision: 70, reason: 'compacted' });
  assert.deepEqual(applied, [[50, 51], 70]);
  assert.equal(assembler.buffered, 0);
});
