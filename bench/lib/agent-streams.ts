/**
 * A load process for the control-plane scenario: holds many agents' Watch
 * streams, one HTTP/2 connection each (as separate pods connect), and reports
 * when each stream received each awaited revision. It speaks gRPC over a
 * hand-framed HTTP/2 connection per agent (h2-wire-client.ts: a request,
 * then length-prefixed messages) rather than a grpc-js channel or even a
 * node:http2 session per agent, so thousands of simulated agents fit on the
 * load core and the lag measures the server, not the load generator.
 *
 * Driven by its parent over IPC (forked, then pinned with taskset):
 *   → { type: 'open', address, token, prefix, count, openConcurrency }
 *   ← { type: 'opened', open, failed, seconds }
 *   → { type: 'expect', revision, sendNs, timeoutMs }
 *   ← { type: 'delivered', revision, lagsMs, missing }
 *   → { type: 'close' }  (the process exits)
 * Arrival times are process.hrtime (CLOCK_MONOTONIC), comparable across
 * processes on one machine.
 */
import { openWireCall, type WireCall } from './h2-wire-client.ts';
import { watchEventFromWire, watchRequestToWire, watchServiceDefinition } from '../../src/shared/watch-proto.ts';

export type ParentMessage =
  | { readonly type: 'open'; readonly address: string; readonly token: string; readonly prefix: string; readonly count: number; readonly openConcurrency: number }
  | { readonly type: 'expect'; readonly revision: number; readonly sendNs: string; readonly timeoutMs: number }
  | { readonly type: 'close' };

export type ChildMessage =
  | { readonly type: 'opened'; readonly open: number; readonly failed: number; readonly seconds: number; readonly firstError?: string }
  | {
      readonly type: 'delivered';
      readonly revision: number;
      readonly lagsMs: number[];
      readonly missing: number;
      readonly ended: number;
      /** The awaited event's message size (0 when none arrived), so a reference can send the same. */
      readonly bytes: number;
    };

type WireEvent = Parameters<typeof watchEventFromWire>[0];

const watchMethod = watchServiceDefinition().Watch;
if (!watchMethod) throw new Error('watch.proto has no Watch method');
const method = watchMethod;
const PATH = method.path;
const FIRST_MESSAGE_TIMEOUT_MS = 60_000;

interface Agent {
  call?: WireCall;
  ended: boolean;
}

/** Arrival time (hrtime ns) per revision per agent index. */
const arrivals = new Map<number, Float64Array>();
/** Message size per revision (of its first arrival). */
const sizes = new Map<number, number>();
const agents: Agent[] = [];
let onArrival: ((revision: number) => void) | undefined;

function send(message: ChildMessage): void {
  process.send?.(message);
}

/** Splits a gRPC response body into messages (1-byte flag, 4-byte length, payload). */
function messageReader(onMessage: (payload: Buffer) => void): (chunk: Buffer) => void {
  let pending: Buffer = Buffer.alloc(0);
  return (chunk) => {
    pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
    while (pending.length >= 5) {
      const length = pending.readUInt32BE(1);
      if (pending.length < 5 + length) break;
      onMessage(pending.subarray(5, 5 + length));
      pending = pending.subarray(5 + length);
    }
  };
}

/**
 * The revision of an ItemChanged WatchEvent, else undefined, read from the
 * top-level fields only (revision = 1, item_changed = 2): thousands of copies
 * of each event arrive here, and a full decode would make the load process,
 * not the server, the bottleneck. The decoding path is checked once per
 * stream on its first message (see openOne).
 */
export function itemChangedRevision(payload: Buffer): number | undefined {
  let offset = 0;
  let revision = 0;
  let itemChanged = false;
  const varint = (): number => {
    let value = 0;
    let scale = 1;
    for (;;) {
      const byte = payload[offset++] ?? 0;
      value += (byte & 0x7f) * scale;
      if (byte < 0x80 || offset >= payload.length) return value;
      scale *= 128;
    }
  };
  while (offset < payload.length) {
    const tag = varint();
    const field = Math.floor(tag / 8);
    const wireType = tag & 7;
    if (wireType === 0) {
      const value = varint();
      if (field === 1) revision = value;
    } else if (wireType === 2) {
      const length = varint();
      if (field === 2) itemChanged = true;
      offset += length;
    } else if (wireType === 1) offset += 8;
    else if (wireType === 5) offset += 4;
    else return undefined;
  }
  return itemChanged ? revision : undefined;
}

function openOne(index: number, address: string, token: string, prefix: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const colon = address.lastIndexOf(':');
    const agent: Agent = { ended: false };
    agents[index] = agent;
    let first = true;
    const body = method.requestSerialize(watchRequestToWire({ prefixes: [prefix], sinceRevision: 0, agentId: `bench-agent-${process.pid}-${index}` }));
    const request = Buffer.alloc(5 + body.length);
    request.writeUInt32BE(body.length, 1);
    body.copy(request, 5);
    let at = 0;
    const read = messageReader((payload) => {
      if (first) {
        first = false;
        // The first message is a full decode: a stream that does not speak the protocol fails here.
        if (!watchEventFromWire(method.responseDeserialize(payload) as WireEvent)) {
          reject(new Error('the first message is not a WatchEvent'));
          return;
        }
        resolve();
      }
      const revision = itemChangedRevision(payload);
      if (revision === undefined) return;
      let times = arrivals.get(revision);
      if (!times) {
        times = new Float64Array(agents.length);
        arrivals.set(revision, times);
        sizes.set(revision, payload.length);
      }
      times[index] = at;
      onArrival?.(revision);
    });
    agent.call = openWireCall({
      host: address.slice(0, colon),
      port: Number(address.slice(colon + 1)),
      path: PATH,
      headers: [
        ['content-type', 'application/grpc'],
        ['te', 'trailers'],
        ['authorization', `Bearer ${token}`],
      ],
      body: request,
      onData: (chunk, atNs) => {
        at = atNs;
        read(chunk);
      },
      onEnd: (why) => {
        agent.ended = true;
        if (first) {
          first = false;
          reject(new Error(`the call ended before its first message: ${why}`));
        }
      },
    });
  });
}

async function open(message: Extract<ParentMessage, { type: 'open' }>): Promise<void> {
  const started = Date.now();
  let failed = 0;
  let firstError: string | undefined;
  let next = 0;
  agents.length = message.count;
  // Bounded: `openConcurrency` handshakes at a time, each bounded by its own timeout.
  const worker = async (): Promise<void> => {
    while (next < message.count) {
      const index = next++;
      let timer: NodeJS.Timeout | undefined;
      try {
        await Promise.race([
          openOne(index, message.address, message.token, message.prefix),
          new Promise<never>((_, reject) => {
            timer = setTimeout(() => reject(new Error('no first message within 60 s')), FIRST_MESSAGE_TIMEOUT_MS);
          }),
        ]);
      } catch (err) {
        failed++;
        firstError ??= (err as Error).message;
      } finally {
        clearTimeout(timer);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, message.openConcurrency) }, worker));
  send({ type: 'opened', open: message.count - failed, failed, seconds: (Date.now() - started) / 1000, ...(firstError ? { firstError } : {}) });
}

function expect(message: Extract<ParentMessage, { type: 'expect' }>): void {
  const sendNs = Number(BigInt(message.sendNs));
  const count = (): number => {
    const times = arrivals.get(message.revision);
    if (!times) return 0;
    let n = 0;
    for (const t of times) if (t > 0) n++;
    return n;
  };
  const live = agents.filter((a) => !a.ended).length;
  const finish = (): void => {
    onArrival = undefined;
    clearTimeout(timer);
    const times = arrivals.get(message.revision) ?? new Float64Array(agents.length);
    arrivals.delete(message.revision);
    const bytes = sizes.get(message.revision) ?? 0;
    sizes.delete(message.revision);
    const lagsMs: number[] = [];
    let missing = 0;
    for (const t of times) {
      if (t > 0) lagsMs.push((t - sendNs) / 1e6);
      else missing++;
    }
    send({ type: 'delivered', revision: message.revision, lagsMs, missing, ended: agents.filter((a) => a.ended).length, bytes });
  };
  const timer = setTimeout(finish, message.timeoutMs);
  let have = count();
  if (have >= live) {
    finish();
    return;
  }
  onArrival = (revision) => {
    if (revision !== message.revision) return;
    if (++have >= live) finish();
  };
}

function close(): void {
  for (const agent of agents) agent?.call?.close();
  process.exit(0);
}

process.on('message', (message: ParentMessage) => {
  if (message.type === 'open') void open(message);
  else if (message.type === 'expect') expect(message);
  else close();
});
process.on('disconnect', () => process.exit(0));
