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
  // Debug logs, so the test that the pod token never reaches the output sees everything the agent would write.
  agent = await startAgentProcess(server, { prefixes: ['production/app'], prefetch: ['production/app/key'], args: ['--log-level', 'debug'] });
  await waitReady(agent.adminUrl);
  token = await readFile(agent.tokenPath, 'utf8');
});
after(async () => {
  await agent.stop('SIGKILL');
  await server.stop('SIGKILL');
  await removeDir(agent.dir);
  await removeDir(server.dataDir);
});

/** Opens `count` connections to the agent's TCP listener, each sending a request head that never ends (slowloris); resolves once all connected or failed. */
function slowConnections(count: number): Promise<Socket[]> {
  const url = new URL(agent.httpUrl);
  const sockets: Socket[] = [];
  let settled = 0;
  return new Promise((resolve) => {
    const done = (): void => {
      if (++settled === count) resolve(sockets);
    };
    for (let i = 0; i < count; i++) {
      const socket = connect(Number(url.port), url.hostname, () => {
        socket.write(`GET ${PATH} HTTP/1.1\r\nHost: agent\r\n`);
        done();
      });
      socket.on('error', done);
      sockets.push(socket);
    }
  });
}

test('1,500 slow connections without the pod token do not lock reads out of the TCP listener', async () => {
  const sockets = await slowConnections(1_500);
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

/** Sends one request on a kept-alive socket and resolves with the status line of the response that comes back. */
function statusOn(socket: Socket, headers: string): Promise<string> {
  return new Promise((resolve, reject) => {
    let seen = '';
    const timer = setTimeout(() => done(new Error(`no response within 10 s (got ${JSON.stringify(seen.slice(0, 80))})`)), 10_000);
    const onData = (chunk: Buffer): void => {
      seen += chunk.toString('latin1');
      if (seen.includes('\r\n\r\n')) done(undefined, seen.slice(0, seen.indexOf('\r\n')));
    };
    const onClose = (): void => done(new Error(`the agent closed the connection (got ${JSON.stringify(seen.slice(0, 80))})`));
    function done(err?: Error, line?: string): void {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('close', onClose);
      if (err) reject(err);
      else resolve(line ?? '');
    }
    socket.on('data', onData);
    socket.once('close', onClose);
    socket.write(`GET ${PATH}?format=raw HTTP/1.1\r\nHost: agent\r\n${headers}\r\n`);
  });
}

test('a client connection that has been served is not shed by a flood of slow connections', async () => {
  // Served connections are never shed: the listener marks each as served from its request handler.
  const url = new URL(agent.httpUrl);
  const client = connect(Number(url.port), url.hostname);
  client.on('error', () => {});
  let flood: Socket[] = [];
  try {
    assert.equal(await statusOn(client, `x-config-sidecar-token: ${token}\r\n`), 'HTTP/1.1 200 OK');
    flood = await slowConnections(1_500);
    assert.equal(await statusOn(client, `x-config-sidecar-token: ${token}\r\n`), 'HTTP/1.1 200 OK', 'the served connection still answers after the flood');
  } finally {
    for (const s of flood) s.destroy();
    client.destroy();
  }
});

test('a request without the pod token is answered 401 and its connection closed', async () => {
  const res = await http(agent.httpUrl, 'GET', PATH);
  assert.equal(res.status, 401);
  assert.equal(res.headers.connection, 'close');
});

test('the pod token, right or wrong, never appears in the agent\'s output', async () => {
  const url = new URL(agent.httpUrl);
  const wrong = `${token.slice(0, -1)}${token.endsWith('A') ? 'B' : 'A'}`;
  const client = connect(Number(url.port), url.hostname);
  client.on('error', () => {});
  try {
    // Twice on one connection: the second is accepted by the connection's proof (src/agent/pod-token.ts).
    assert.equal(await statusOn(client, `x-config-sidecar-token: ${token}\r\n`), 'HTTP/1.1 200 OK');
    assert.equal(await statusOn(client, `x-config-sidecar-token: ${token}\r\n`), 'HTTP/1.1 200 OK');
  } finally {
    client.destroy();
  }
  assert.equal((await http(agent.httpUrl, 'GET', PATH, { headers: { 'x-config-sidecar-token': wrong } })).status, 401);
  const output = agent.output();
  assert.ok(output.length > 0, 'the agent wrote its debug log');
  assert.equal(output.includes(token), false, 'the pod token is in the agent\'s output');
  assert.equal(output.includes(wrong), false, 'a presented wrong token is in the agent\'s output');
});
