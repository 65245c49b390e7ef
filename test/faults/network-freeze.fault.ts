/**
 * Fault suite: a frozen network between the agent and the server (a proxy that
 * stops moving bytes on every connection, open ones included). The agent must
 * notice the silent Watch stream, keep answering reads from its cache (marked
 * stale) without hanging, and once the network thaws, catch up with what was
 * written meanwhile.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { http, removeDir, startServerProcess } from '../helpers/server-process.ts';
import { socketGet, startAgentProcess, waitReady } from '../helpers/agent-process.ts';
import { startTcpProxy } from '../helpers/tcp-proxy.ts';

const ITEM = 'team/app/db-password';

test('frozen network between agent and server: cached reads keep answering (stale-marked), the agent catches up after the thaw', async (t) => {
  const server = await startServerProcess({ args: ['--heartbeat-interval', '500ms'] });
  t.after(async () => {
    await server.stop('SIGKILL');
    await removeDir(server.dataDir);
  });
  const token = server.rootToken;
  assert.equal((await http(server.httpUrl, 'PUT', `/v1/items/${ITEM}`, { token, body: { kind: 'secret', value: 'before-freeze' } })).status, 200);
  const rest = new URL(server.httpUrl);
  const [grpcHost, grpcPort] = [server.grpcAddress.slice(0, server.grpcAddress.lastIndexOf(':')), Number(server.grpcAddress.split(':').pop())];
  const restProxy = await startTcpProxy(`${rest.hostname}:${rest.port}`);
  const grpcProxy = await startTcpProxy(`${grpcHost}:${grpcPort}`);
  t.after(async () => {
    await restProxy.close();
    await grpcProxy.close();
  });
  const agent = await startAgentProcess({ httpUrl: `http://${restProxy.address}`, grpcAddress: grpcProxy.address, rootToken: token }, { prefixes: ['team'], prefetch: [ITEM] });
  t.after(async () => {
    await agent.stop('SIGKILL');
    await removeDir(agent.dir);
  });
  await waitReady(agent.adminUrl);
  assert.equal((await socketGet(agent.socketPath, `/v1/items/${ITEM}`)).json.value, 'before-freeze');

  restProxy.freeze();
  grpcProxy.freeze();
  t.diagnostic('tried: froze both proxies (REST and gRPC): connections stay open, no byte moves');
  await agent.waitForLog((l) => /silent for 3 heartbeat intervals/.test(String(l.msg)), 15_000);
  t.diagnostic('held: the agent declared the silent stream dead within 3 heartbeat intervals');
  const started = Date.now();
  const during = await socketGet(agent.socketPath, `/v1/items/${ITEM}`);
  assert.equal(during.status, 200, during.body.toString());
  assert.equal(during.json.value, 'before-freeze');
  assert.ok(Date.now() - started < 1_000, 'a cached read does not wait on the frozen network');
  t.diagnostic(`held: a cached read during the freeze answered 200 in ${Date.now() - started} ms${during.headers.warning ? ` with "${String(during.headers.warning)}"` : ''}`);

  const put = await http(server.httpUrl, 'PUT', `/v1/items/${ITEM}`, { token, body: { kind: 'secret', value: 'written-during-freeze' } });
  assert.equal(put.status, 200);
  restProxy.restore();
  grpcProxy.restore();
  t.diagnostic('tried: wrote a new value while frozen, then thawed');
  const deadline = Date.now() + 30_000;
  let value: unknown;
  while (Date.now() < deadline) {
    value = (await socketGet(agent.socketPath, `/v1/items/${ITEM}`)).json?.value;
    if (value === 'written-during-freeze') break;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  assert.equal(value, 'written-during-freeze', 'the agent caught up after the thaw');
  t.diagnostic(`held: the agent served the value written during the freeze ${Date.now() - (deadline - 30_000)} ms after the thaw`);
});
