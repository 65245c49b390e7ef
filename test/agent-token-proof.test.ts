/**
 * The pod token is proved once per TCP connection (src/agent/pod-token.ts),
 * through the real TCP listener and node's parser on keep-alive connections:
 * a later request on a connection that proved the token is accepted only with
 * the identical header, a wrong one is refused and ends that connection, and
 * one connection's proof lets no other connection in.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { syncBuiltinESMExports } from 'node:module';
import { connect, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import { createDataServer } from '../src/agent/data-listeners.ts';
import { cachedSecret } from './helpers/cached-value.ts';

const TOKEN = 'pod-token-0123456789-abcdefghijklmnopqrstu';
const WRONG = 'pod-token-0123456789-abcdefghijklmnopqrstv';
const ANSWER_TIMEOUT_MS = 5_000;

const cached = cachedSecret('cached');

let server: Server;
let port: number;

before(async () => {
  server = createDataServer('tcp', {
    deps: {
      prefixes: () => ['production/ml'],
      podToken: Buffer.from(TOKEN),
      env: 'prod',
      readCached: () => ({ value: cached, source: 'hit', staleSeconds: 0, ageSeconds: 0 }),
      read: () => Promise.reject(new Error('every read here is a cache hit')),
      release: () => {},
    },
    serveSse: () => {},
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  port = (server.address() as AddressInfo).port;
});

after(() => {
  server.closeAllConnections();
  return new Promise<void>((resolve) => server.close(() => resolve()));
});

interface Answer {
  readonly status: number;
  readonly body: string;
}

/** One keep-alive connection: each `get` sends one request and resolves its whole response (head and Content-Length body). */
class Connection {
  readonly #socket: Socket;
  #text = '';
  #waiting: ((answer: Answer | Error) => void) | undefined;
  /** Resolves when the listener has closed the connection. */
  readonly closed: Promise<void>;
  private constructor(socket: Socket) {
    this.#socket = socket;
    socket.setEncoding('latin1');
    socket.on('data', (chunk: string) => {
      this.#text += chunk;
      this.#deliver();
    });
    this.closed = new Promise((resolve) => socket.once('close', () => {
      this.#waiting?.(new Error(`the connection closed before an answer (got ${JSON.stringify(this.#text.slice(0, 80))})`));
      resolve();
    }));
  }

  static open(): Promise<Connection> {
    return new Promise((resolve, reject) => {
      const socket = connect(port, '127.0.0.1', () => resolve(new Connection(socket)));
      socket.once('error', reject);
    });
  }

  get(headerLines: readonly string[]): Promise<Answer> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => this.#answer(new Error(`no answer within ${ANSWER_TIMEOUT_MS} ms`)), ANSWER_TIMEOUT_MS);
      this.#waiting = (answer) => {
        clearTimeout(timer);
        this.#waiting = undefined;
        if (answer instanceof Error) reject(answer);
        else resolve(answer);
      };
      this.#socket.write(`GET /v1/items/production/ml/cached HTTP/1.1\r\nHost: agent\r\n${headerLines.map((l) => `${l}\r\n`).join('')}\r\n`);
    });
  }

  destroy(): void {
    this.#socket.destroy();
  }

  #answer(answer: Answer | Error): void {
    this.#waiting?.(answer);
  }

  #deliver(): void {
    const end = this.#text.indexOf('\r\n\r\n');
    if (end < 0 || this.#waiting === undefined) return;
    const head = this.#text.slice(0, end);
    const length = Number(/^content-length: *(\d+)/im.exec(head)?.[1] ?? 0);
    if (this.#text.length < end + 4 + length) return;
    const body = this.#text.slice(end + 4, end + 4 + length);
    this.#text = this.#text.slice(end + 4 + length);
    this.#answer({ status: Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1] ?? 0), body });
  }
}

const token = (value: string): string => `x-config-sidecar-token: ${value}`;

test('a wrong token on a fresh connection is refused and the connection closed', async () => {
  const c = await Connection.open();
  try {
    const refused = await c.get([token(WRONG)]);
    assert.equal(refused.status, 401);
    assert.match(refused.body, /"code":"unauthenticated"/);
    await c.closed;
  } finally {
    c.destroy();
  }
});

test('right then wrong on one keep-alive connection: the wrong one is refused and ends it; the right token still works', async () => {
  const c = await Connection.open();
  try {
    assert.equal((await c.get([token(TOKEN)])).status, 200);
    assert.equal((await c.get([token(TOKEN)])).status, 200, 'the proved connection, the identical header');
    assert.equal((await c.get([token(WRONG)])).status, 401, 'a proved connection is not a licence for any token');
    await c.closed;
  } finally {
    c.destroy();
  }
  const next = await Connection.open();
  try {
    assert.equal((await next.get([token(TOKEN)])).status, 200);
  } finally {
    next.destroy();
  }
});

test('on a proved connection, no header or a repeated header is refused', async () => {
  for (const lines of [[], [token(TOKEN), token(TOKEN)], [`X-Config-Sidecar-Token: ${TOKEN}`, token(TOKEN)], [token('')]]) {
    const c = await Connection.open();
    try {
      assert.equal((await c.get([token(TOKEN)])).status, 200);
      assert.equal((await c.get(lines)).status, 401, JSON.stringify(lines));
      await c.closed;
    } finally {
      c.destroy();
    }
  }
});

test('a connection that proved the token lets no other connection in', async () => {
  const proved = await Connection.open();
  const others: Connection[] = [];
  try {
    assert.equal((await proved.get([token(TOKEN)])).status, 200);
    for (const lines of [[token(WRONG)], [], [token(`${TOKEN}, ${TOKEN}`)]]) {
      const other = await Connection.open();
      others.push(other);
      assert.equal((await other.get(lines)).status, 401, JSON.stringify(lines));
    }
    assert.equal((await proved.get([token(TOKEN)])).status, 200, 'the proved connection still answers');
  } finally {
    proved.destroy();
    for (const o of others) o.destroy();
  }
});

test('each connection proves the token itself: another connection\'s proof is never compared with, nor dropped by, a fresh connection', async (t) => {
  // Counts the constant-time checks (pod-token.ts imports timingSafeEqual by name: syncBuiltinESMExports carries the mock to it).
  const check = t.mock.method(crypto, 'timingSafeEqual');
  syncBuiltinESMExports();
  t.after(() => {
    check.mock.restore();
    syncBuiltinESMExports();
  });
  const proved = await Connection.open();
  const fresh: Connection[] = [];
  try {
    assert.equal((await proved.get([token(TOKEN)])).status, 200);
    assert.equal(check.mock.callCount(), 1, 'the first request takes the constant-time check');
    // A fresh connection sending the string the first one proved is checked in constant time, not by comparing it with the other's.
    const other = await Connection.open();
    fresh.push(other);
    assert.equal((await other.get([token(TOKEN)])).status, 200);
    assert.equal(check.mock.callCount(), 2, 'a fresh connection with the proved string takes the constant-time check');
    const wrong = await Connection.open();
    fresh.push(wrong);
    assert.equal((await wrong.get([token(WRONG)])).status, 401);
    assert.equal(check.mock.callCount(), 3);
    // The refused connection dropped its own proof only: the first connection's identical header needs no new check.
    assert.equal((await proved.get([token(TOKEN)])).status, 200);
    assert.equal(check.mock.callCount(), 3, 'another connection\'s failed check left this connection\'s proof alone');
  } finally {
    proved.destroy();
    for (const c of fresh) c.destroy();
  }
});
