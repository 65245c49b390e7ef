/**
 * The control-plane floor (issue 21): what Node's HTTP/2 costs with nothing
 * on top. A bare node:http2 server, with the gRPC listener's HTTP/2 settings,
 * that answers every request with one open response stream (a gRPC response
 * head and one WatchEvent, so the same load processes, bench/lib/agent-streams.ts,
 * connect to it as to the server) and keeps it open. A control port
 * (HTTP/1.1 on 127.0.0.1) writes one event to every open stream:
 *   GET /write?revision=N&bytes=B → {"streams":…,"ms":…}
 * where the event is one length-prefixed message of B bytes whose first
 * field is the revision and whose second is an ItemChanged (what the load
 * processes look for), framed once and the same Buffer written to every
 * stream in one loop: no slicing, no per-stream state beyond Node's own.
 *
 * Usage: node bare-http2-streams.ts
 * Prints `listening <http2 port> <control port>` once ready.
 */
import { createServer as createHttp1Server } from 'node:http';
import { createServer, type ServerHttp2Stream } from 'node:http2';
import { GRPC_HTTP2_SETTINGS } from '../../src/server/grpc-listener.ts';
import { encodeEvent } from '../../src/server/watch/event-codec.ts';

const streams = new Set<ServerHttp2Stream>();

/** A gRPC message: 1-byte flag (uncompressed), 4-byte length, payload. */
function framed(payload: Buffer): Buffer {
  const frame = Buffer.alloc(5 + payload.length);
  frame.writeUInt32BE(payload.length, 1);
  payload.copy(frame, 5);
  return frame;
}

const varint = (value: number): number[] => {
  const out: number[] = [];
  let v = value;
  while (v >= 0x80) {
    out.push((v % 0x80) | 0x80);
    v = Math.floor(v / 0x80);
  }
  out.push(v);
  return out;
};

/**
 * A WatchEvent of about `bytes` bytes: revision (field 1) and an ItemChanged
 * (field 2) holding one bytes field the load processes skip (they read only
 * the top-level fields).
 */
function itemChanged(revision: number, bytes: number): Buffer {
  const pad = Buffer.alloc(Math.max(0, bytes - 16));
  const inner = Buffer.concat([Buffer.from([0x7a, ...varint(pad.length)]), pad]);
  return Buffer.concat([Buffer.from([0x08, ...varint(revision), 0x12, ...varint(inner.length)]), inner]);
}

const hello = framed(
  encodeEvent({ type: 'heartbeat', revision: 0, digest: '', currentRevision: 0, intervalMs: 30_000, storeId: 'floor', environments: [] }).bytes,
);

const server = createServer({ settings: GRPC_HTTP2_SETTINGS });
server.on('stream', (stream) => {
  stream.on('error', () => {});
  stream.respond({ ':status': 200, 'content-type': 'application/grpc' });
  stream.write(hello);
  streams.add(stream);
  stream.once('close', () => streams.delete(stream));
  // The request body (the WatchRequest) is read and dropped.
  stream.resume();
});
server.on('session', (session) => session.on('error', () => {}));

const control = createHttp1Server((req, res) => {
  const url = new URL(req.url ?? '/', 'http://localhost');
  const revision = Number(url.searchParams.get('revision'));
  const bytes = Number(url.searchParams.get('bytes') ?? 1024);
  if (url.pathname !== '/write' || !Number.isSafeInteger(revision) || revision <= 0) {
    res.writeHead(400).end();
    return;
  }
  const started = performance.now();
  const frame = framed(itemChanged(revision, bytes));
  for (const stream of streams) stream.write(frame);
  const ms = performance.now() - started;
  res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ streams: streams.size, ms }));
});

const stop = (): void => {
  control.close();
  server.close();
  for (const stream of streams) stream.session?.destroy();
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
server.listen(0, '127.0.0.1', () => {
  control.listen(0, '127.0.0.1', () => {
    const h2 = server.address();
    const ctl = control.address();
    console.log(`listening ${typeof h2 === 'object' && h2 ? h2.port : ''} ${typeof ctl === 'object' && ctl ? ctl.port : ''}`);
  });
});
