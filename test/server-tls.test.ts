import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFile, rename } from 'node:fs/promises';
import { request } from 'node:https';
import { join } from 'node:path';
import { X509Certificate } from 'node:crypto';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import { makeTempDir, openWatch, removeDir, startServerProcess, type ServerProcess } from './helpers/server-process.ts';

const cleanup: Array<() => Promise<unknown>> = [];
after(async () => {
  for (const fn of cleanup.reverse()) await fn();
});

function makeCert(dir: string, name: string): { cert: string; key: string } {
  const cert = join(dir, `${name}.crt`);
  const key = join(dir, `${name}.key`);
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1', '-subj', `/CN=${name}`, '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', key, '-out', cert], { stdio: 'ignore' });
  return { cert, key };
}

function peerFingerprint(url: string, ca: Buffer[], token: string): Promise<{ fingerprint: string; status: number }> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const req = request({ host: u.hostname, port: u.port, path: '/v1/list/team', ca, agent: false, headers: { authorization: `Bearer ${token}` } }, (res) => {
      const fingerprint = (res.socket as TLSSocket).getPeerX509Certificate()?.fingerprint256 ?? '';
      res.resume();
      res.on('end', () => resolve({ fingerprint, status: res.statusCode ?? 0 }));
    });
    req.on('error', reject);
    req.end();
  });
}

const FIRST_CALL_TIMEOUT_MS = 1_000;

/** Completes a TLS (h2) handshake with the gRPC listener, then sends nothing; `closed` resolves with ms from handshake to close. */
function handshakeOnly(address: string, ca: Buffer): Promise<{ closed: Promise<number> }> {
  const port = Number(address.slice(address.lastIndexOf(':') + 1));
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({ host: '127.0.0.1', port, ca, ALPNProtocols: ['h2'] }, () => {
      const at = Date.now();
      socket.resume();
      resolve({ closed: new Promise((done) => socket.once('close', () => done(Date.now() - at))) });
    });
    socket.on('error', reject);
  });
}

test('TLS on REST and gRPC; both reload the certificate when the files change', async () => {
  const dir = await makeTempDir('cs-tls-');
  cleanup.push(() => removeDir(dir));
  const first = makeCert(dir, 'first');
  const second = makeCert(dir, 'second');
  const live = { cert: join(dir, 'tls.crt'), key: join(dir, 'tls.key') };
  execFileSync('cp', [first.cert, live.cert]);
  execFileSync('cp', [first.key, live.key]);
  const server: ServerProcess = await startServerProcess({ args: ['--tls-cert', live.cert, '--tls-key', live.key, '--grpc-first-call-timeout', `${FIRST_CALL_TIMEOUT_MS}ms`] });
  cleanup.push(() => removeDir(server.dataDir));
  cleanup.push(() => server.stop('SIGKILL'));
  assert.match(server.httpUrl, /^https:/);
  const cas = [await readFile(first.cert), await readFile(second.cert)];

  const before = await peerFingerprint(server.httpUrl, cas, server.rootToken);
  assert.equal(before.status, 200);
  assert.equal(before.fingerprint, new X509Certificate(cas[0] as Buffer).fingerprint256);

  const watch = openWatch(server.grpcAddress, { prefixes: ['team'] }, server.rootToken, { credentials: grpc.credentials.createSsl(cas[0]) });
  assert.equal((await watch.next()).type, 'heartbeat', 'gRPC Watch over TLS');
  // A client that finishes the TLS handshake but starts no call loses its connection at the first-call timeout.
  const handshaken = await handshakeOnly(server.grpcAddress, cas[0] as Buffer);
  const closedAfter = await handshaken.closed;
  assert.ok(closedAfter >= FIRST_CALL_TIMEOUT_MS - 100 && closedAfter < FIRST_CALL_TIMEOUT_MS + 5_000, `closed ${closedAfter} ms after the handshake`);
  assert.equal((await watch.next()).type, 'heartbeat', 'the Watch that started a call keeps its connection');
  watch.close();
  const untrusted = openWatch(server.grpcAddress, { prefixes: ['team'] }, server.rootToken, { credentials: grpc.credentials.createSsl(cas[1]) });
  assert.equal((await untrusted.status).code, grpc.status.UNAVAILABLE, 'the second certificate is not served yet');

  // Replace both files the way a secret volume does, then wait for the reload.
  execFileSync('cp', [second.key, `${live.key}.new`]);
  execFileSync('cp', [second.cert, `${live.cert}.new`]);
  await rename(`${live.key}.new`, live.key);
  await rename(`${live.cert}.new`, live.cert);
  await server.waitForLog((l) => l.msg === 'TLS certificate reloaded');
  const afterReload = await peerFingerprint(server.httpUrl, cas, server.rootToken);
  assert.equal(afterReload.fingerprint, new X509Certificate(cas[1] as Buffer).fingerprint256);
  const reloaded = openWatch(server.grpcAddress, { prefixes: ['team'] }, server.rootToken, { credentials: grpc.credentials.createSsl(cas[1]) });
  assert.equal((await reloaded.next()).type, 'heartbeat', 'gRPC presents the new certificate too');
  reloaded.close();
});

test('a certificate that does not match its key stops start-up naming the setting', async () => {
  const dir = await makeTempDir('cs-tls-');
  cleanup.push(() => removeDir(dir));
  const a = makeCert(dir, 'a');
  const b = makeCert(dir, 'b');
  await assert.rejects(startServerProcess({ args: ['--tls-cert', a.cert, '--tls-key', b.key] }), /--tls-key \(CONFIG_SIDECAR_TLS_KEY\).*not the private key/);
});
