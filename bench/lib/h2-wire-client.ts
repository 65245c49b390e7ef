/**
 * A minimal HTTP/2 client for one gRPC server-streaming call per TCP
 * connection, framed by hand, for the control-plane load processes
 * (agent-streams.ts). A node:http2 client session per simulated agent cost
 * the load core ~19–23 µs per received event (nghttp2, the session and
 * stream objects, a 'data' event through two streams), as much as the server
 * spent sending it, so with thousands of agents on one load core the lag
 * measured the load generator. Here a received event is one socket read and
 * a frame-header walk.
 *
 * What it speaks (RFC 9113): the preface; SETTINGS with no push, no header
 * table and the largest stream window, and one connection WINDOW_UPDATE to
 * the largest window, so no further flow control is needed for a bench run
 * (2 GiB per connection); one HEADERS (HPACK literals, never indexed) and one
 * DATA frame with the request; SETTINGS and PING acknowledged. Response
 * headers are skipped (not decoded: nothing here reads them); DATA payloads
 * on stream 1 are handed on; trailers (HEADERS with END_STREAM), RST_STREAM,
 * GOAWAY or the socket closing end the call.
 */
import { connect, type Socket } from 'node:net';

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');
const FRAME_HEADER = 9;
const MAX_WINDOW = 2 ** 31 - 1;
const DEFAULT_WINDOW = 65_535;
const STREAM = 1;

/** Frame types used here (RFC 9113 §6). */
const FRAME = {
  DATA: 0x0,
  HEADERS: 0x1,
  RST_STREAM: 0x3,
  SETTINGS: 0x4,
  PING: 0x6,
  GOAWAY: 0x7,
  WINDOW_UPDATE: 0x8,
} as const;
const FLAG_END_STREAM = 0x1;
const FLAG_ACK = 0x1;
const FLAG_END_HEADERS = 0x4;
const FLAG_PADDED = 0x8;

function frame(type: number, flags: number, stream: number, payload: Buffer): Buffer {
  const out = Buffer.alloc(FRAME_HEADER + payload.length);
  out.writeUIntBE(payload.length, 0, 3);
  out[3] = type;
  out[4] = flags;
  out.writeUInt32BE(stream, 5);
  payload.copy(out, FRAME_HEADER);
  return out;
}

/** An HPACK integer with an n-bit prefix (RFC 7541 §5.1), first byte or'ed with `high`. */
function hpackInt(value: number, prefixBits: number, high: number): number[] {
  const max = (1 << prefixBits) - 1;
  if (value < max) return [high | value];
  const out = [high | max];
  let rest = value - max;
  while (rest >= 128) {
    out.push((rest % 128) | 0x80);
    rest = Math.floor(rest / 128);
  }
  out.push(rest);
  return out;
}

/** A header block of literal fields without indexing, new names (RFC 7541 §6.2.2). */
function headerBlock(headers: ReadonlyArray<readonly [string, string]>): Buffer {
  const parts: Buffer[] = [];
  for (const [name, value] of headers) {
    const n = Buffer.from(name, 'latin1');
    const v = Buffer.from(value, 'latin1');
    parts.push(Buffer.from([0x00, ...hpackInt(n.length, 7, 0)]), n, Buffer.from(hpackInt(v.length, 7, 0)), v);
  }
  return Buffer.concat(parts);
}

export interface WireCall {
  readonly socket: Socket;
  close(): void;
}

export interface WireCallOptions {
  readonly host: string;
  readonly port: number;
  readonly path: string;
  readonly headers: ReadonlyArray<readonly [string, string]>;
  /** The request message, already length-prefixed. */
  readonly body: Buffer;
  /** A chunk of the response's DATA (message boundaries are the caller's), with the time the socket read it. */
  readonly onData: (chunk: Buffer, atNs: number) => void;
  /** Called once when the call or the connection ends. */
  readonly onEnd: (why: string) => void;
}

export function openWireCall(o: WireCallOptions): WireCall {
  const socket = connect({ host: o.host, port: o.port, noDelay: true });
  let ended = false;
  const end = (why: string): void => {
    if (ended) return;
    ended = true;
    o.onEnd(why);
    socket.destroy();
  };
  socket.on('error', (err) => end(err.message));
  socket.on('close', () => end('connection closed'));
  socket.on('connect', () => {
    const settings = Buffer.alloc(18);
    // HEADER_TABLE_SIZE 0, ENABLE_PUSH 0, INITIAL_WINDOW_SIZE max.
    settings.writeUInt16BE(0x1, 0);
    settings.writeUInt32BE(0, 2);
    settings.writeUInt16BE(0x2, 6);
    settings.writeUInt32BE(0, 8);
    settings.writeUInt16BE(0x4, 12);
    settings.writeUInt32BE(MAX_WINDOW, 14);
    const windowUpdate = Buffer.alloc(4);
    windowUpdate.writeUInt32BE(MAX_WINDOW - DEFAULT_WINDOW, 0);
    const headers = headerBlock([
      [':method', 'POST'],
      [':scheme', 'http'],
      [':path', o.path],
      [':authority', `${o.host}:${o.port}`],
      ...o.headers,
    ]);
    socket.write(
      Buffer.concat([
        PREFACE,
        frame(FRAME.SETTINGS, 0, 0, settings),
        frame(FRAME.WINDOW_UPDATE, 0, 0, windowUpdate),
        frame(FRAME.HEADERS, FLAG_END_HEADERS, STREAM, headers),
        frame(FRAME.DATA, FLAG_END_STREAM, STREAM, o.body),
      ]),
    );
  });
  let pending: Buffer = Buffer.alloc(0);
  socket.on('data', (chunk: Buffer) => {
    const at = Number(process.hrtime.bigint());
    pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
    let offset = 0;
    while (pending.length - offset >= FRAME_HEADER) {
      const length = pending.readUIntBE(offset, 3);
      if (pending.length - offset < FRAME_HEADER + length) break;
      const type = pending[offset + 3] ?? 0;
      const flags = pending[offset + 4] ?? 0;
      const stream = pending.readUInt32BE(offset + 5) & 0x7fffffff;
      const payload = pending.subarray(offset + FRAME_HEADER, offset + FRAME_HEADER + length);
      offset += FRAME_HEADER + length;
      if (type === FRAME.DATA && stream === STREAM) {
        const pad = flags & FLAG_PADDED ? (payload[0] ?? 0) : -1;
        if (payload.length > 0) o.onData(pad >= 0 ? payload.subarray(1, payload.length - pad) : payload, at);
        if (flags & FLAG_END_STREAM) end('stream ended');
      } else if (type === FRAME.HEADERS && stream === STREAM && flags & FLAG_END_STREAM) {
        end('trailers received');
      } else if (type === FRAME.RST_STREAM && stream === STREAM) {
        end(`stream reset (code ${payload.length >= 4 ? payload.readUInt32BE(0) : 0})`);
      } else if (type === FRAME.SETTINGS && !(flags & FLAG_ACK)) {
        socket.write(frame(FRAME.SETTINGS, FLAG_ACK, 0, Buffer.alloc(0)));
      } else if (type === FRAME.PING && !(flags & FLAG_ACK)) {
        socket.write(frame(FRAME.PING, FLAG_ACK, 0, Buffer.from(payload)));
      } else if (type === FRAME.GOAWAY) {
        end(`goaway (code ${payload.length >= 8 ? payload.readUInt32BE(4) : 0})`);
      }
    }
    pending = offset === pending.length ? Buffer.alloc(0) : pending.subarray(offset);
  });
  return { socket, close: () => end('closed by the load process') };
}
