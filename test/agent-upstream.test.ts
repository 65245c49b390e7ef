/**
 * The agent's REST client against a real local HTTP server: a 429 is retried
 * after its Retry-After (on the injected clock) instead of failing the
 * caller, within a bounded wait; an error's meaning is read from the body's
 * `error.code` through the one error table.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { once } from 'node:events';
import { ManualClock } from '../src/shared/clock.ts';
import { createUpstream, UPSTREAM_RATE_LIMIT_BUDGET_MS } from '../src/agent/upstream.ts';
import type { TokenSource } from '../src/agent/token-source.ts';

const REF = { namespace: 'production/ml', name: 'db' };
const ENVELOPE = {
  namespace: REF.namespace,
  name: REF.name,
  kind: 'secret',
  env: 'prod',
  version: 1,
  revision: 1,
  etag: '"1"',
  layers: [{ env: 'prod', version: 1, keyId: 'k1', keyVersion: 1, iv: 'AAAAAAAAAAAAAAAA', ciphertext: 'AA==', tag: 'AAAAAAAAAAAAAAAAAAAAAA==' }],
};
const token: TokenSource = { current: () => 'T', healthy: true } as unknown as TokenSource;

async function withServer(answers: Array<(res: ServerResponse) => void>, fn: (url: string, requests: IncomingMessage[], arrived: () => Promise<void>) => Promise<void>): Promise<void> {
  const requests: IncomingMessage[] = [];
  let wake: (() => void) | undefined;
  const server = createServer((req, res) => {
    requests.push(req);
    (answers[requests.length - 1] ?? answers[answers.length - 1])?.(res);
    wake?.();
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  let seen = 0;
  const arrived = async (): Promise<void> => {
    seen += 1;
    while (requests.length < seen) await new Promise<void>((resolve) => (wake = resolve));
  };
  try {
    await fn(url, requests, arrived);
  } finally {
    server.closeAllConnections();
    server.close();
  }
}

/** Waits (bounded) until the client is waiting on the clock for its Retry-After. */
async function sleeping(clock: ManualClock): Promise<void> {
  const deadline = Date.now() + 5_000;
  while (clock.pending === 0) {
    assert.ok(Date.now() < deadline, 'the client never waited for Retry-After');
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
}

const json = (status: number, body: unknown, headers: Record<string, string> = {}) => (res: ServerResponse) => {
  res.writeHead(status, { 'content-type': 'application/json', ...headers });
  res.end(JSON.stringify(body));
};

test('a 429 is retried after its Retry-After and the caller gets its value (no error while the server is reachable)', async () => {
  const limited = json(429, { error: { code: 'rate_limited', message: 'slow down' } }, { 'retry-after': '2' });
  await withServer([limited, limited, json(200, ENVELOPE)], async (url, requests) => {
    const clock = new ManualClock();
    const upstream = createUpstream({ servers: [url], token, clock, agentId: 'a' });
    try {
      const pending = upstream.fetchEnvelope(REF, 'prod');
      await sleeping(clock);
      clock.advance(1_999);
      assert.equal(requests.length, 1, 'nothing is sent before Retry-After has passed');
      clock.advance(1);
      await sleeping(clock);
      assert.equal(requests.length, 2);
      clock.advance(2_000);
      assert.equal((await pending).etag, '"1"');
      assert.equal(requests.length, 3);
    } finally {
      await upstream.close();
    }
  });
});

test('a 429 past the wait budget fails as rate_limited with Retry-After (transient: stale-if-error applies)', async () => {
  const limited = json(429, { error: { code: 'rate_limited', message: 'slow down' } }, { 'retry-after': String(UPSTREAM_RATE_LIMIT_BUDGET_MS / 1000 + 5) });
  await withServer([limited], async (url) => {
    const upstream = createUpstream({ servers: [url], token, clock: new ManualClock(), agentId: 'a' });
    try {
      await assert.rejects(upstream.fetchEnvelope(REF, 'prod'), (err: { code: string; headers: Record<string, string> }) => err.code === 'rate_limited' && err.headers['retry-after'] === '15');
    } finally {
      await upstream.close();
    }
  });
});

test('the body\'s error.code decides: a 400 invalid_argument is the caller\'s error, a 503 store_unavailable is transient, a 404 drops', async () => {
  await withServer(
    [json(400, { error: { code: 'invalid_argument', message: 'Unknown environment "qa"' } }), json(503, { error: { code: 'store_unavailable', message: 'db down' } }), json(404, { error: { code: 'not_found', message: 'gone' } })],
    async (url) => {
      const upstream = createUpstream({ servers: [url], token, clock: new ManualClock(), agentId: 'a' });
      try {
        await assert.rejects(upstream.fetchEnvelope(REF, 'qa'), { code: 'invalid_argument', message: 'Unknown environment "qa"' });
      } finally {
        await upstream.close();
      }
    },
  );
});

test('a 2xx body off the protocol is an upstream_error naming the route (retried, then reported); extra keys in a good one are dropped', async () => {
  const { layers, ...rest } = ENVELOPE;
  const bad = json(200, { ...rest, layers: [{ ...layers[0], keyVersion: '1' }] });
  await withServer([bad, bad, bad, json(200, { ...ENVELOPE, future: 1, layers: [{ ...layers[0], future: 2 }] })], async (url, requests) => {
    const clock = new ManualClock();
    const upstream = createUpstream({ servers: [url], token, clock, agentId: 'a' });
    try {
      const failing = assert.rejects(upstream.fetchEnvelope(REF, 'prod'), { code: 'upstream_error', message: "The server's envelopes response does not match the protocol." });
      for (let retry = 1; retry < 3; retry++) {
        await sleeping(clock);
        clock.advance(60_000);
      }
      await failing;
      assert.equal(requests.length, 3);
      const good = await upstream.fetchEnvelope(REF, 'prod');
      assert.equal('future' in good, false);
      assert.equal('future' in (good.layers[0] as object), false);
      assert.deepEqual(good, ENVELOPE);
    } finally {
      await upstream.close();
    }
  });
});

test('an error answer whose body is off the protocol is classified by its status alone', async () => {
  await withServer([json(404, { error: 'gone' })], async (url) => {
    const upstream = createUpstream({ servers: [url], token, clock: new ManualClock(), agentId: 'a' });
    try {
      await assert.rejects(upstream.fetchEnvelope(REF, 'prod'), { code: 'not_found', message: 'HTTP 404' });
    } finally {
      await upstream.close();
    }
  });
});
