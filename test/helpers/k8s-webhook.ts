/**
 * Starts the real `config-sidecar webhook` process over HTTPS for tests, with
 * a self-signed certificate made by the `openssl` CLI, mounted the way the
 * kubelet mounts a Secret (files behind a `..data` symlink that is swapped
 * atomically on rotation), and a small HTTPS client pinned to that CA.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { request } from 'node:https';
import { join } from 'node:path';
import type { TLSSocket } from 'node:tls';
import { CLI_MAIN, REPO_ROOT } from './k8s-cli.ts';

export interface KeyPairFiles {
  readonly cert: string;
  readonly key: string;
}

/** A fresh self-signed EC certificate for localhost/127.0.0.1, PEM text. */
export function makeSelfSigned(cn: string): KeyPairFiles {
  const dir = mkdtempSync(join(tmpdir(), 'k8s-cert-'));
  try {
    execFileSync(
      'openssl',
      [
        'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
        '-keyout', join(dir, 'tls.key'), '-out', join(dir, 'tls.crt'), '-days', '1', '-subj', `/CN=${cn}`,
        '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1',
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    return { cert: readFileSync(join(dir, 'tls.crt'), 'utf8'), key: readFileSync(join(dir, 'tls.key'), 'utf8') };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * Publishes a pair into `dir` like the kubelet's atomic writer: a new
 * timestamped directory, then a rename of the `..data` symlink.
 */
export function publishSecret(dir: string, pair: KeyPairFiles, generation: number): void {
  const snapshot = join(dir, `..gen${generation}`);
  mkdirSync(snapshot, { recursive: true });
  writeFileSync(join(snapshot, 'tls.crt'), pair.cert);
  writeFileSync(join(snapshot, 'tls.key'), pair.key);
  symlinkSync(`..gen${generation}`, join(dir, '..data_tmp'));
  renameSync(join(dir, '..data_tmp'), join(dir, '..data'));
  if (generation === 0) {
    symlinkSync('..data/tls.crt', join(dir, 'tls.crt'));
    symlinkSync('..data/tls.key', join(dir, 'tls.key'));
  }
}

export interface WebhookProcess {
  readonly port: number;
  readonly child: ChildProcess;
  readonly lines: ReadonlyArray<Record<string, unknown>>;
  /** Resolves with the first log line (already seen or future) matching `test`. */
  waitForLog(test: (line: Record<string, unknown>) => boolean, timeoutMs?: number): Promise<Record<string, unknown>>;
  stop(): Promise<void>;
}

export async function startWebhookProcess(tlsDir: string, extraArgs: readonly string[] = []): Promise<WebhookProcess> {
  const child = spawn(
    process.execPath,
    [CLI_MAIN, 'webhook', '--listen', '127.0.0.1:0', '--tls-cert', join(tlsDir, 'tls.crt'), '--tls-key', join(tlsDir, 'tls.key'), ...extraArgs],
    { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const lines: Record<string, unknown>[] = [];
  const waiters = new Set<{ test: (l: Record<string, unknown>) => boolean; resolve: (l: Record<string, unknown>) => void }>();
  let buffer = '';
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
    buffer += chunk;
    let nl: number;
    while ((nl = buffer.indexOf('\n')) >= 0) {
      const text = buffer.slice(0, nl);
      buffer = buffer.slice(nl + 1);
      let line: Record<string, unknown>;
      try {
        line = JSON.parse(text) as Record<string, unknown>;
      } catch {
        continue;
      }
      lines.push(line);
      for (const w of waiters) if (w.test(line)) { waiters.delete(w); w.resolve(line); }
    }
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const waitForLog = (test: (l: Record<string, unknown>) => boolean, timeoutMs = 10_000) => {
    const seen = lines.find(test);
    if (seen) return Promise.resolve(seen);
    return new Promise<Record<string, unknown>>((resolve, reject) => {
      const waiter = { test, resolve: (l: Record<string, unknown>) => { clearTimeout(timer); resolve(l); } };
      const timer = setTimeout(() => {
        waiters.delete(waiter);
        reject(new Error(`log line not seen within ${timeoutMs} ms; stderr: ${stderr}`));
      }, timeoutMs);
      waiters.add(waiter);
      void exited.then(() => {
        if (waiters.delete(waiter)) { clearTimeout(timer); reject(new Error(`webhook exited; stderr: ${stderr}`)); }
      });
    });
  };
  const listening = await waitForLog((l) => l.msg === 'webhook listening');
  return {
    port: Number(listening.port),
    child,
    lines,
    waitForLog,
    async stop() {
      if (child.exitCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
}

export interface HttpsAnswer {
  readonly status: number;
  readonly body: string;
  readonly fingerprint: string;
}

/** One HTTPS request trusting only `ca`; resolves with the status, body and the served certificate's fingerprint. */
export function httpsRequest(
  port: number,
  ca: string,
  options: { method?: string; path?: string; body?: string | Buffer; contentType?: string },
): Promise<HttpsAnswer> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port,
        method: options.method ?? 'POST',
        path: options.path ?? '/mutate',
        ca,
        agent: false,
        headers: options.body === undefined ? {} : { 'content-type': options.contentType ?? 'application/json' },
      },
      (res) => {
        const fingerprint = (res.socket as TLSSocket).getPeerCertificate().fingerprint256;
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8'), fingerprint }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(options.body);
  });
}

export function readText(path: string): string {
  return readFileSync(path, 'utf8');
}
