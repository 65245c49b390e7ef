/**
 * The agent's ring store (issue 20) as a unit, with a fake upstream (sealed
 * for real: SealedKeyring) and a ManualClock: a ring fill that raced an event
 * for its item is never stored or served (made deterministic by holding the
 * envelope), members age out on the clock with one announcement each time and
 * are zero-filled, and a member already expired by the agent's clock is never
 * served; a held ring sealed into the warm-restart snapshot comes back
 * stale-marked and is read again before it is served as fresh.
 */
import { test } from 'node:test';
import { randomBytes } from 'node:crypto';
import assert from 'node:assert/strict';
import { ManualClock } from '../src/shared/clock.ts';
import { AppError } from '../src/shared/errors.ts';
import { generateTransportKeyPair } from '../src/shared/crypto.ts';
import type { RingEnvelopeResponse } from '../src/shared/ring-proto.ts';
import type { Upstream } from '../src/agent/upstream.ts';
import { DekStore } from '../src/agent/dek-store.ts';
import { RingStore, releaseRing, type RingRead } from '../src/agent/ring-store.ts';
import { openSnapshot, scopeOf, sealedRingOf, sealSnapshot } from '../src/agent/snapshot/snapshot-format.ts';
import { SealedKeyring } from './helpers/sealed-keyring.ts';

const REF = { namespace: 'production/auth', name: 'signing-key' };
const HOUR = 3_600_000;
const MAX_STALE = 10 * 60_000;

function setup(clock: ManualClock) {
  const keyring = new SealedKeyring();
  let kid = 'a';
  let hold: Promise<void> | undefined;
  let fetches = 0;
  let streamDownSince: number | undefined;
  let serverDown = false;
  const envelope = (): RingEnvelopeResponse => {
    const layer = (version: number, value: string) => ({ ...keyring.sealLayer(REF.namespace, REF.name, { env: 'prod', version, revision: version }, Buffer.from(JSON.stringify({ kid: value }))) });
    const at = (ms: number): string => new Date(ms).toISOString();
    return {
      ...REF,
      kind: 'config',
      env: 'prod',
      version: 3,
      revision: 3,
      etag: '"3"',
      layers: [layer(3, `${kid}3`)],
      previous: [
        { version: 2, retiredAt: at(clock.now() - 60_000), expiresAt: at(clock.now() + HOUR - 60_000), layers: [layer(2, `${kid}2`)] },
        { version: 1, retiredAt: at(clock.now() - 120_000), expiresAt: at(clock.now() + 30_000), layers: [layer(1, `${kid}1`)] },
        { version: 0, retiredAt: at(clock.now() - 2 * HOUR), expiresAt: at(clock.now() - HOUR), layers: [layer(1, 'stale')] },
      ],
    };
  };
  const upstream: Pick<Upstream, 'fetchRingEnvelope'> = {
    async fetchRingEnvelope() {
      fetches += 1;
      if (serverDown) throw new AppError('unavailable', 'The server is unreachable.');
      const answer = envelope();
      if (hold) await hold;
      return answer;
    },
  };
  const fullUpstream = { ...upstream, fetchEnvelope: () => Promise.reject(new Error('unused')), fetchDeks: async (ns: string, pk: string) => keyring.fetchDeks(ns, pk), close: async () => {} } as Upstream;
  const deks = new DekStore(fullUpstream, generateTransportKeyPair(), { maxNamespaces: 10 });
  const agedOut: number[] = [];
  const rings = new RingStore({ upstream, deks, clock, onAgedOut: (_ref, _env, version) => agedOut.push(version), streamDownSince: () => streamDownSince, maxStale: MAX_STALE });
  return {
    rings,
    agedOut,
    fetches: () => fetches,
    setKid: (next: string) => (kid = next),
    /** The stream (and the server) go down now, or come back with undefined. */
    setDown(since: number | undefined) {
      streamDownSince = since;
      serverDown = since !== undefined;
    },
    holdNext(): () => void {
      let release!: () => void;
      hold = new Promise((resolve) => (release = resolve));
      return () => {
        hold = undefined;
        release();
      };
    },
  };
}

function kids(ring: RingRead): string[] {
  const out = [ring.current, ...ring.previous].map((v) => (JSON.parse(v.plaintext.toString()) as { kid: string }).kid);
  releaseRing(ring);
  return out;
}

test('a ring fill that raced an event for its item is not stored or served: the read fetches again', async () => {
  const clock = new ManualClock();
  const s = setup(clock);
  const release = s.holdNext();
  const reading = s.rings.read(REF, 'prod');
  await new Promise((resolve) => setImmediate(resolve));
  // The event lands while the envelope (built before it) is on its way.
  s.setKid('b');
  s.rings.invalidate(REF);
  release();
  assert.deepEqual(kids(await reading), ['b3', 'b2', 'b1'], 'the answer that predates the event was dropped');
  assert.equal(s.fetches(), 2);
  assert.deepEqual(kids(await s.rings.read(REF, 'prod')), ['b3', 'b2', 'b1'], 'and the fresh one is held');
  assert.equal(s.fetches(), 2);
});

test('members age out on the clock, each with one announcement; one expired by the agent clock is never served', async () => {
  const clock = new ManualClock();
  const s = setup(clock);
  const first = await s.rings.read(REF, 'prod');
  assert.deepEqual(first.previous.map((p) => p.version), [2, 1], 'version 0 expired an hour ago on this clock: dropped at load');
  const heldCopy = first.previous[1]!.plaintext;
  const etag = first.etag;
  assert.deepEqual(kids(first), ['a3', 'a2', 'a1']);
  assert.ok(heldCopy.every((b) => b === 0), 'released copies are zero-filled');

  clock.advance(30_000);
  assert.deepEqual(s.agedOut, [3], 'one change announced (at the current version) when v1 aged out');
  const later = await s.rings.read(REF, 'prod');
  assert.notEqual(later.etag, etag, 'the ring ETag changes with its members');
  assert.deepEqual(kids(later), ['a3', 'a2']);
  clock.advance(HOUR);
  assert.deepEqual(s.agedOut, [3, 3]);
  assert.deepEqual(kids(await s.rings.read(REF, 'prod')), ['a3']);
  assert.equal(s.fetches(), 1, 'aging out needs no request');
  assert.equal(clock.pending, 0, 'no timer left once the ring holds no previous version');
});

test('while the stream is down a held ring is served stale-marked within max-stale, then refused as stale_expired; an unheld ring is a clear 503', async () => {
  const clock = new ManualClock();
  const s = setup(clock);
  const fresh = await s.rings.read(REF, 'prod');
  assert.equal(fresh.staleSeconds, undefined, 'fresh while the stream vouches for it');
  releaseRing(fresh);
  s.setDown(clock.now());
  clock.advance(90_000);
  const stale = await s.rings.read(REF, 'prod');
  assert.equal(stale.staleSeconds, 90);
  assert.deepEqual(kids(stale), ['a3', 'a2'], 'the held ring, v1 aged out on the clock meanwhile');
  assert.equal(s.fetches(), 1, 'served from memory, no request to the unreachable server');
  await assert.rejects(s.rings.read({ ...REF, name: 'other' }, 'prod'), (err: AppError) => err.code === 'unavailable');
  clock.advance(MAX_STALE);
  await assert.rejects(s.rings.read(REF, 'prod'), (err: AppError) => err.code === 'stale_expired' && /older than max-stale/.test(err.message));
  s.setDown(undefined);
  const back = await s.rings.read(REF, 'prod');
  assert.equal(back.staleSeconds, undefined);
  assert.deepEqual(kids(back), ['a3', 'a2', 'a1'], 'read again from the server once it answers');
});

test('a held ring goes through the warm-restart snapshot: restored stale-marked from the snapshot time with no request, an aged-out member dropped, and read again (never fresh) once the stream is up', async () => {
  const clock = new ManualClock();
  const before = setup(clock);
  releaseRing(await before.rings.read(REF, 'prod'));
  const takenAt = clock.now();
  const held = before.rings.held();
  assert.equal(held.length, 1);
  const key = randomBytes(32);
  const scope = scopeOf(['production'], 'prod');
  const position = { storeId: 's', revision: 3, digest: 'd' };
  const file = sealSnapshot(key, { scope, takenAt, position }, [], held.map(sealedRingOf));
  assert.ok(held[0]!.current.plaintext.every((b) => b === 0), 'the held copies are zero-filled once sealed');
  assert.ok(!file.includes(Buffer.from('a3')) && !file.includes(Buffer.from('signing-key')), 'no key or item name in the sealed file');
  const opened = openSnapshot(file, key, scope);
  assert.ok(opened.ok);
  assert.equal(opened.header.rings, 1);

  // The restarted agent: the stream is down, the server too; v1 ages out 30 s after the snapshot.
  clock.advance(40_000);
  const after = setup(clock);
  after.setDown(takenAt);
  for (const ring of opened.rings) after.rings.restore(ring, takenAt);
  const stale = await after.rings.read(REF, 'prod');
  assert.equal(stale.staleSeconds, 40, 'stale since the snapshot time');
  assert.deepEqual(kids(stale), ['a3', 'a2'], 'v1 aged out before the restart: never served');
  assert.equal(after.fetches(), 0, 'served from the snapshot, no request');

  after.setKid('b');
  after.setDown(undefined);
  const back = await after.rings.read(REF, 'prod');
  assert.equal(back.staleSeconds, undefined);
  assert.deepEqual(kids(back), ['b3', 'b2', 'b1'], 'a restored ring is read again before it is served as fresh');
  assert.equal(after.fetches(), 1);
});
