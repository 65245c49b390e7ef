/**
 * A lean HTTP/1.1 load client for the read-path scenarios: keep-alive
 * connections (pipelining 1) over a Unix socket or 127.0.0.1, each request's
 * bytes built once per path, every response read into one buffer per
 * connection (`net` `onread`) and parsed by its status line and
 * Content-Length. It does what wrk does, in the runner's process.
 *
 * Why not undici or autocannon (bench/README.md, "How it measures"): they
 * cost ~20–30 µs of the load core per request and ~20 KiB of garbage, so
 * (1) at saturation the load core ran out before the server's did (the
 * agent's core was ~55 % busy at "saturation", bare node:http's likewise),
 * and (2) at a fixed 2,000 req/s the client's own scavenges (10–45 ms with
 * a grown young generation) landed in the measured requests: the
 * "stall once per round" of the agent's p99 was the client's
 * (docs/FOOTPRINT-LOG.md, fixed-rate part).
 *
 * Responses must carry Content-Length (every system in the suite sends it);
 * a chunked or unframed response counts as an error and its connection is
 * reopened.
 */
import { connect, type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import type { Target } from './load.ts';

/** Response head larger than this is an error (ours are ~300 bytes). */
const MAX_HEAD = 16 * 1024;
const READ_BUFFER = 64 * 1024;
const HEAD_END = Buffer.from('\r\n\r\n');
const MAX_REOPENS = 100;

export type Completion = (status: number, startedMs: number) => void;

/**
 * One keep-alive connection with at most one request in flight. `send`
 * writes a prebuilt request; `done` is called with the status when the last
 * body byte has arrived, or with status 0 on a connection error.
 */
export class LeanConnection {
  readonly #target: Target;
  readonly #done: Completion;
  #socket: Socket;
  readonly #head = Buffer.allocUnsafe(MAX_HEAD);
  #headLen = 0;
  /** Body bytes still to come for the response in flight; -1 while reading its head. */
  #remaining = -1;
  #status = 0;
  #startedMs = 0;
  #busy = false;
  #closed = false;
  /** Reopened after errors this many times; past MAX_REOPENS the target counts as gone and every send fails. */
  #reopens = 0;

  constructor(target: Target, done: Completion) {
    this.#target = target;
    this.#done = done;
    this.#socket = this.#open();
  }

  get busy(): boolean {
    return this.#busy;
  }

  /** Resolves once connected (a fresh connection's setup stays out of the first request's time). */
  ready(): Promise<void> {
    if (!this.#socket.connecting) return Promise.resolve();
    return new Promise((resolve, reject) => {
      this.#socket.once('connect', () => resolve());
      this.#socket.once('error', (err) => reject(err));
    });
  }

  send(request: Buffer, startedMs: number): void {
    this.#busy = true;
    this.#startedMs = startedMs;
    this.#headLen = 0;
    this.#remaining = -1;
    if (this.#reopens > MAX_REOPENS) {
      queueMicrotask(() => this.#fail());
      return;
    }
    this.#socket.write(request);
  }

  close(): void {
    this.#closed = true;
    this.#socket.destroy();
  }

  #open(): Socket {
    const onread = { buffer: Buffer.allocUnsafe(READ_BUFFER), callback: (n: number, buf: Uint8Array): boolean => this.#onData(buf as Buffer, n) };
    const socket =
      this.#target.kind === 'socket'
        ? connect({ path: this.#target.socketPath, onread })
        : connect({ host: new URL(this.#target.url).hostname, port: Number(new URL(this.#target.url).port), onread, noDelay: true });
    // Events of a connection already replaced are stale.
    socket.on('error', () => socket === this.#socket && this.#fail());
    socket.on('close', () => socket === this.#socket && this.#fail());
    return socket;
  }

  #fail(): void {
    if (this.#closed) return;
    const wasBusy = this.#busy;
    const started = this.#startedMs;
    this.#busy = false;
    this.#socket.destroy();
    if (++this.#reopens <= MAX_REOPENS) this.#socket = this.#open();
    if (wasBusy) this.#done(0, started);
  }

  #onData(buf: Buffer, n: number): boolean {
    let at = 0;
    while (at < n && this.#busy) {
      if (this.#remaining < 0) {
        const take = Math.min(n - at, MAX_HEAD - this.#headLen);
        buf.copy(this.#head, this.#headLen, at, at + take);
        const searchFrom = Math.max(0, this.#headLen - 3);
        this.#headLen += take;
        const end = this.#head.subarray(0, this.#headLen).indexOf(HEAD_END, searchFrom);
        if (end < 0) {
          if (this.#headLen >= MAX_HEAD) this.#fail();
          return true;
        }
        const headBytes = end + 4;
        // Bytes of this chunk past the head are body: step back over what was copied beyond it.
        at += take - (this.#headLen - headBytes);
        const head = this.#head.toString('latin1', 0, end);
        this.#status = Number(head.slice(9, 12));
        const length = /\r\ncontent-length:[ \t]*(\d+)/i.exec(head)?.[1];
        if (this.#status === 304 || this.#status === 204) this.#remaining = 0;
        else if (length === undefined) {
          this.#fail();
          return true;
        } else this.#remaining = Number(length);
      }
      const body = Math.min(this.#remaining, n - at);
      this.#remaining -= body;
      at += body;
      if (this.#remaining === 0) {
        this.#busy = false;
        this.#remaining = -1;
        this.#done(this.#status, this.#startedMs);
      }
    }
    return true;
  }
}

/** The request's bytes: `GET path` with the target's headers and the path's own. */
export function requestBytes(target: Target, path: string, extra?: Record<string, string>): Buffer {
  const headers = { ...target.headers, ...extra };
  let text = `GET ${path} HTTP/1.1\r\nhost: localhost\r\n`;
  for (const [name, value] of Object.entries(headers)) text += `${name}: ${value}\r\n`;
  return Buffer.from(`${text}\r\n`, 'latin1');
}

export function nowMs(): number {
  return performance.now();
}
