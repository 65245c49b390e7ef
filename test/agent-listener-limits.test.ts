/**
 * The agent's TCP listener under a flood of slow connections that never send
 * the pod token: its connection budget sheds the oldest request-less
 * connection instead of refusing newcomers, so an application's reads keep
 * being answered; a request without the token does not keep its connection.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { http, removeDir, startServerProcess, type ServerProcess } from './helpers/server-process.ts';
import { startAgentProcess, waitReady, type AgentProcess } from './helpers/agent-process.ts';

const PATH = '/v1/items/production/app/key';
let server: ServerProcess;
let agent: AgentProcess;
let token: string;

before(async () => {
  server = await startServerProcess();
  assert.equal((await http(server.httpUrl, 'PUT', PATH, { token: server.rootToken, body: { kind: 'secret', value: 'v' } })).status, 200);
  agent = await startAgentProcess(server, { prefixes: ['production/app'], prefetch: ['production/app/key'] });
  await waitReady(agent.adminUrl);
  token = await readFile(agent.tokenPath, 'utf8');
});
after(async () => {
  await agent.stop('SIGKILL');
  await server.stop('SIGKILL');
  await removeDir(agent.dir);
  await removeDir(server.dataDir);
});

test('1,500 slow connections without the pod token do not lock reads out of the TCP listener', async () => {
  const url = new URL(agent.httpUrl);
  const sockets: Socket[] = [];
  let connected = 0;
  await new Promise<void>((resolve) => {
    for (let i = 0; i < 1_500; i++) {
      const socket = connect(Number(url.port), url.hostname, () => {
        // Slowloris: a request head that never ends.
        socket.write(`GET ${PATH} HTTP/1.1\r\nHost: agent\r\n`);
        if (++connected === 1_500) resolve();
      });
      socket.on('error', () => {
        if (++connected === 1_500) resolve();
      });
      sockets.push(socket);
    }
  });
  try {
    let ok = 0;
    const failures: string[] = [];
    for (let i = 0; i < 40; i++) {
      try {
        const res = await http(agent.httpUrl, 'GET', PATH, { headers: { 'x-config-sidecar-token': token, connection: 'close' } });
        if (res.status === 200) ok += 1;
        else failures.push(String(res.status));
      } catch (err) {
        failures.push((err as NodeJS.ErrnoException).code ?? String(err));
      }
    }
    assert.equal(ok, 40, `reads answered during the flood: ${ok}/40 (${failures.slice(0, 5).join(', ')})`);
  } finally {
    for (const s of sockets) s.destroy();
  }
});

test('a request without the pod token is answered 401 and its connection closed', async () => {
  const res = await http(agent.httpUrl, 'GET', PATH);
  assert.equal(res.status, 401);
  assert.equal(res.headers.connection, 'close');
});
