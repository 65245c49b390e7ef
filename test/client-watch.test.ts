/**
 * The `config-sidecar/client` module against a real agent and server: get,
 * getRaw, and watch resuming with Last-Event-ID (replayed events within one
 * agent's life, an explicit `resync` across an agent restart; never a silent
 * gap).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createClient, ConfigSidecarError, type WatchEvent } from '../src/client/index.ts';
import { removeDir, startServerProcess, type ServerProcess } from './helpers/server-process.ts';
import { hook, putItem, startAgentProcess, waitReady, type AgentProcess } from './helpers/agent-process.ts';

let server: ServerProcess;
let agent: AgentProcess;

before(async () => {
  server = await startServerProcess();
  await putItem(server, 'production/app/api-key', { kind: 'secret', value: 'key-1' });
  await putItem(server, 'production/app/limits', { kind: 'config', value: { rps: 100 } });
  agent = await startAgentProcess(server, { prefixes: ['production/app'], prefetch: ['production/app/api-key'] });
  await waitReady(agent.adminUrl);
});

after(async () => {
  await agent?.stop();
  await server?.stop();
  await removeDir(agent?.dir ?? '');
  await removeDir(server?.dataDir ?? '');
});

/** Pulls events from an iterator one at a time, with a timeout. */
function reader(iterable: AsyncIterable<WatchEvent>): (timeoutMs?: number) => Promise<WatchEvent> {
  const it = iterable[Symbol.asyncIterator]();
  return async (timeoutMs = 20_000) => {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error('no watch event in time')), timeoutMs);
    });
    try {
      const next = await Promise.race([it.next(), timeout]);
      if (next.done) throw new Error('watch ended');
      return next.value;
    } finally {
      clearTimeout(timer);
    }
  };
}

test('get and getRaw over the socket; errors carry the agent code', async () => {
  const client = createClient({ socketPath: agent.socketPath });
  try {
    const item = await client.get<string>('production/app/api-key');
    assert.deepEqual([item.value, item.kind, item.staleSeconds], ['key-1', 'secret', 0]);
    assert.deepEqual((await client.get<{ rps: number }>('production/app/limits')).value, { rps: 100 });
    assert.equal((await client.getRaw('production/app/api-key')).toString(), 'key-1');
    await assert.rejects(client.get('production/app/missing'), (e: unknown) => e instanceof ConfigSidecarError && e.code === 'not_found' && e.status === 404);
    await assert.rejects(client.get('production/other/x'), (e: unknown) => e instanceof ConfigSidecarError && e.status === 403);
  } finally {
    await client.close();
  }
  const tcp = createClient({ url: agent.httpUrl, tokenFile: agent.tokenPath });
  try {
    assert.equal((await tcp.get('production/app/api-key')).value, 'key-1');
  } finally {
    await tcp.close();
  }
});

test('watch replays missed events by Last-Event-ID, and sends resync across an agent restart', async () => {
  const client = createClient({ socketPath: agent.socketPath });
  const controller = new AbortController();
  try {
    const first = await putItem(server, 'production/app/api-key', { kind: 'secret', value: 'key-2' });
    const second = await putItem(server, 'production/app/api-key', { kind: 'secret', value: 'key-3' });
    // Resume after the first put: the agent replays the second from its ring.
    const next = reader(client.watch('production/app', { lastEventId: String(first.revision - 1), signal: controller.signal }));
    const replayed = [await next(), await next()];
    assert.deepEqual(replayed.map((e) => [e.type, e.revision]), [['changed', first.revision], ['changed', second.revision]]);

    // The agent restarts; events land while it is gone.
    await agent.stop('SIGTERM');
    const missed = await putItem(server, 'production/app/limits', { kind: 'config', value: { rps: 200 } });
    agent = await startAgentProcess(server, { dir: agent.dir, prefixes: ['production/app'], prefetch: ['production/app/api-key'] });
    await waitReady(agent.adminUrl);
    // The new agent cannot replay what happened before it started: an explicit resync, never a silent gap.
    const resumed = await next();
    assert.equal(resumed.type, 'resync');
    const live = await putItem(server, 'production/app/api-key', { kind: 'secret', value: 'key-4' });
    const after = await next();
    assert.deepEqual([after.type, after.name, after.revision], ['changed', 'api-key', live.revision]);
    assert.ok(live.revision > missed.revision);
    assert.deepEqual((await client.get<{ rps: number }>('production/app/limits')).value, { rps: 200 });
  } finally {
    controller.abort();
    await client.close();
  }
});

test('watchSets yields a change set as one array, with the set revision as every member\'s id', async () => {
  const client = createClient({ socketPath: agent.socketPath });
  const controller = new AbortController();
  try {
    // Resume after a revision the agent applied: the ring replays anything later, so nothing depends on when the stream opens.
    const { revision: before } = await putItem(server, 'production/app/limits', { kind: 'config', value: { rps: 150 } });
    await hook(agent.adminUrl, 'GET', `/debug/wait-revision?atLeast=${before}`);
    const it = client.watchSets('production/app', { signal: controller.signal, lastEventId: String(before) })[Symbol.asyncIterator]();
    const { http } = await import('./helpers/server-process.ts');
    const res = await http(server.httpUrl, 'POST', '/v1/changes', {
      token: server.rootToken,
      body: { changes: [{ item: 'production/app/api-key', kind: 'secret', value: 'key-2' }, { item: 'production/app/limits', kind: 'config', value: { rps: 200 } }] },
    });
    assert.equal(res.status, 200, res.text);
    const set = (await it.next()).value as WatchEvent[];
    assert.deepEqual(
      set.map((e) => [e.name, e.revision, e.id, e.setRevision, e.endsSet ?? false]),
      [
        ['api-key', res.json.revision - 1, String(res.json.revision), res.json.revision, false],
        ['limits', res.json.revision, String(res.json.revision), res.json.revision, true],
      ],
    );
    assert.equal((await client.get<string>('production/app/api-key')).value, 'key-2');
  } finally {
    controller.abort();
    await client.close();
  }
});
