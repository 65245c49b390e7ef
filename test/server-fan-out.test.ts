/**
 * Issue 21: the Watch fan-out runs after the write, in slices that yield to
 * the event loop, encodes each event once for every stream, keeps commit
 * order, and can target a batch at some streams; one timer beats every
 * stream once per interval. Unit tests of fan-out.ts and heartbeat-ticker.ts
 * over real WatchStreams with in-memory sinks (the end-to-end paths are in
 * server-watch*.test.ts; speed is measured by the bench's control-plane
 * scenario, never here).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ManualClock } from '../src/shared/clock.ts';
import { createLogger } from '../src/shared/logger.ts';
import { watchEventFromWire, watchServiceDefinition, type WatchEvent } from '../src/shared/watch-proto.ts';
import type { LogEvent } from '../src/server/control-plane.ts';
import { encodeEvent } from '../src/server/watch/event-codec.ts';
import { FanOut } from '../src/server/watch/fan-out.ts';
import { HeartbeatTicker } from '../src/server/watch/heartbeat-ticker.ts';
import { WatchStream, type StreamSink } from '../src/server/watch/watch-stream.ts';
import { LogSink } from './helpers/store-fixtures.ts';

const digestOf = (revision: number): string => revision.toString(16).padStart(32, '0');
const changed = (revision: number, namespace = 'app'): LogEvent => ({
  type: 'itemChanged',
  revision,
  digest: digestOf(revision),
  namespace,
  name: 'x',
  kind: 'config',
  version: revision,
  env: 'base',
});

class Sink implements StreamSink {
  readonly bytes: Buffer[] = [];
  write(bytes: Buffer): boolean {
    this.bytes.push(bytes);
    return true;
  }
  once(): unknown {
    return this;
  }
  finish(): void {}
  get events(): WatchEvent[] {
    const method = watchServiceDefinition().Watch;
    return this.bytes.map((b) => watchEventFromWire(method?.responseDeserialize(b) as Parameters<typeof watchEventFromWire>[0]) as WatchEvent);
  }
}

/** `count` live streams at revision 0 watching `prefix`, each with its sink. */
async function liveStreams(count: number, prefix = 'app'): Promise<Array<{ stream: WatchStream; sink: Sink }>> {
  const head = { storeId: 'store-1', revision: 0, compactedThrough: 0, compactedDigest: '', afterDigest: '', events: [] };
  const out: Array<{ stream: WatchStream; sink: Sink }> = [];
  for (let id = 1; id <= count; id++) {
    const sink = new Sink();
    const stream = new WatchStream({
      id,
      subject: 's',
      prefixes: [prefix],
      start: { kind: 'now' },
      environments: ['base'],
      log: { page: async () => head, head: async () => head },
      sink,
      bound: 16,
      heartbeatInterval: 1000,
      onQueueDepth: () => {},
      onSent: () => {},
      onEnd: () => {},
    });
    await stream.start();
    out.push({ stream, sink });
  }
  return out;
}

const silent = createLogger({ component: 'test', level: 'silent', destination: new LogSink() });

function fanOutOver(streams: readonly WatchStream[], slice: number, onEncode: (events: readonly LogEvent[]) => void = () => {}) {
  const turns: string[] = [];
  const fanOut = new FanOut({
    encode: async (events) => {
      onEncode(events);
      return events.map((e) => encodeEvent(e));
    },
    streams: () => streams,
    logger: silent,
    slice,
    firstSlice: 0,
    yieldTurn: () =>
      new Promise((resolve) =>
        setImmediate(() => {
          turns.push('yield');
          resolve();
        }),
      ),
  });
  return { fanOut, turns };
}

const itemRevisions = (sink: Sink): number[] => sink.events.filter((e) => e.type === 'itemChanged').map((e) => e.revision);

test('fan-out: publishing returns before any stream is offered the event; delivery comes in slices with the event loop free in between', async () => {
  const watchers = await liveStreams(10);
  const { fanOut, turns } = fanOutOver(
    watchers.map((w) => w.stream),
    3,
  );
  fanOut.publish([changed(1)]);
  assert.deepEqual(
    watchers.map((w) => itemRevisions(w.sink).length),
    Array(10).fill(0),
    'the committing request answers before delivery starts',
  );
  // Work queued right after the commit (the next request) runs before the last slice is delivered.
  let otherWorkSawDelivered = -1;
  setImmediate(() => (otherWorkSawDelivered = watchers.filter((w) => itemRevisions(w.sink).length > 0).length));
  await fanOut.idle();
  assert.ok(otherWorkSawDelivered >= 0 && otherWorkSawDelivered < 10, `other work ran mid-delivery (saw ${otherWorkSawDelivered} of 10 delivered)`);
  assert.equal(turns.length, 4, 'one turn before delivery and one between each of the 4 slices of 3');
  for (const w of watchers) assert.deepEqual(itemRevisions(w.sink), [1]);
});

test('fan-out: the first few streams are offered a batch in the commit\'s own turn, the rest only after the committing request has answered', async () => {
  const watchers = await liveStreams(20);
  const fanOut = new FanOut({
    encode: async (events) => events.map((e) => encodeEvent(e)),
    streams: () => watchers.map((w) => w.stream),
    logger: silent,
    slice: 8,
    firstSlice: 4,
  });
  const delivered = (): number => watchers.filter((w) => itemRevisions(w.sink).length > 0).length;
  fanOut.publish([changed(1)]);
  assert.equal(delivered(), 0, 'publishing itself offers nothing (the commit returns first)');
  // The committing request flushes its audit row on an immediate and then answers (control-plane-impl.ts).
  const atAnswer = await new Promise<number>((resolve) => setImmediate(() => resolve(delivered())));
  assert.equal(atAnswer, 4, 'only the first slice is offered before the request answers, whatever the number of streams');
  await fanOut.idle();
  assert.equal(delivered(), 20);
  for (const w of watchers) assert.deepEqual(itemRevisions(w.sink), [1]);
});

test('fan-out: every stream gets every batch in commit order, each event encoded once into one buffer shared by all streams', async () => {
  const watchers = await liveStreams(7);
  const encodedBatches: number[][] = [];
  const { fanOut } = fanOutOver(
    watchers.map((w) => w.stream),
    2,
    (events) => encodedBatches.push(events.map((e) => e.revision)),
  );
  fanOut.publish([changed(1), changed(2)]);
  fanOut.publish([changed(3)]);
  fanOut.publish([changed(4, 'elsewhere'), changed(5)]);
  watchers[3]?.stream.end(1, 'gone', 'cancelled');
  await fanOut.idle();
  assert.deepEqual(encodedBatches, [[1, 2], [3], [4, 5]], 'one encode per batch, whatever the number of streams');
  for (const [i, w] of watchers.entries()) assert.deepEqual(itemRevisions(w.sink), i === 3 ? [] : [1, 2, 3, 5], `stream ${i + 1}`);
  const at5 = watchers.filter((_, i) => i !== 3).map((w) => w.sink.bytes.at(-1));
  assert.ok(
    at5.every((b) => b === at5[0]),
    'the same Buffer is written to every stream',
  );
});

test('fan-out: a targeted batch is sent only to its audience; the other streams move their bookmark past it', async () => {
  const watchers = await liveStreams(4);
  const { fanOut } = fanOutOver(
    watchers.map((w) => w.stream),
    256,
  );
  fanOut.publish([changed(1)], (stream) => stream.id === 2);
  await fanOut.idle();
  assert.deepEqual(
    watchers.map((w) => itemRevisions(w.sink)),
    [[], [1], [], []],
  );
  assert.deepEqual(
    watchers.map((w) => w.stream.position.revision),
    [1, 1, 1, 1],
    'every bookmark covers the targeted revision',
  );
});

test('fan-out: a batch published just as the previous delivery finishes is delivered too (no batch left waiting for the next commit)', async () => {
  const watchers = await liveStreams(2);
  let published = false;
  const fanOut: FanOut = new FanOut({
    encode: async (events) => events.map((e) => encodeEvent(e)),
    streams: () => watchers.map((w) => w.stream),
    logger: silent,
    yieldTurn: () => new Promise((resolve) => setImmediate(resolve)),
    // A commit landing in the microtask right after the first batch's delivery completes.
    onDone: () => {
      if (published) return;
      published = true;
      queueMicrotask(() => fanOut.publish([changed(2)]));
    },
  });
  fanOut.publish([changed(1)]);
  await fanOut.idle();
  await fanOut.idle();
  for (const w of watchers) assert.deepEqual(itemRevisions(w.sink), [1, 2]);
});

test('heartbeats: a stream that sent an event since its last beat skips the next one (the event carried the bookmark); one that filtered an event out after it, or sent nothing, beats', async () => {
  const clock = new ManualClock();
  const [busy, filtered, quiet] = await liveStreams(3);
  const streams = [busy, filtered, quiet].map((w) => w?.stream as WatchStream);
  const ticker = new HeartbeatTicker({ clock, interval: 1000, streams: () => streams, slots: 1 });
  const beats = (w: typeof busy): WatchEvent[] => (w?.sink.events ?? []).filter((e) => e.type === 'heartbeat').slice(1);
  busy?.stream.offer(encodeEvent(changed(1)));
  filtered?.stream.offer(encodeEvent(changed(1)));
  filtered?.stream.offer(encodeEvent(changed(2, 'elsewhere')));
  clock.advance(1000);
  assert.equal(beats(busy).length, 0, 'the event just sent said everything the beat would');
  assert.deepEqual(
    beats(filtered).map((e) => e.revision),
    [2],
    'the beat carries the bookmark past the event filtered out',
  );
  assert.equal(beats(quiet).length, 1, 'a stream that sent nothing beats');
  clock.advance(1000);
  assert.deepEqual(
    beats(busy).map((e) => e.revision),
    [1],
    'with nothing sent since, it beats again: never more than two intervals silent (agents give up after three)',
  );
  ticker.stop();
});

test('heartbeats: one timer beats every live stream once per interval, spread over the interval; equal bookmarks share one encoding', async () => {
  const clock = new ManualClock();
  const watchers = await liveStreams(100);
  const streams = watchers.map((w) => w.stream);
  const ticker = new HeartbeatTicker({ clock, interval: 1000, streams: () => streams, slots: 10 });
  const beats = (): number[] => watchers.map((w) => w.sink.events.filter((e) => e.type === 'heartbeat').length - 1);
  clock.advance(100);
  assert.equal(
    beats().reduce((a, b) => a + b, 0),
    10,
    'one slot of ten beats per tick',
  );
  clock.advance(900);
  assert.deepEqual(beats(), Array(100).fill(1), 'every stream beat once in the interval');
  assert.equal(clock.pending, 1, 'one timer for all streams');
  const last = watchers.filter((w) => w.stream.id % 10 === 3).map((w) => w.sink.bytes.at(-1));
  assert.ok(last.every((b) => b === last[0]));
  streams[0]?.end(1, 'gone', 'cancelled');
  clock.advance(1000);
  assert.equal(beats()[0], 1, 'an ended stream does not beat');
  ticker.stop();
  ticker.stop();
  assert.equal(clock.pending, 0);
});

