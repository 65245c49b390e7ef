/**
 * `config-sidecar doctor`: checks, in the order an application depends on
 * them, that the local agent is usable: its socket answers, the pod token is
 * readable, the agent is ready, and (with --server) the control plane answers.
 * Each failed check prints what to look at. Exit 0 when all pass, 1 otherwise.
 */
import { access, constants, readFile } from 'node:fs/promises';
import { request as httpRequest } from '../shared/node-http.ts';
import { dirname, join } from 'node:path';
import { Option, type Command } from 'commander';
import { envNameFor } from '../shared/settings.ts';
import { action, EXIT } from './cli-util.ts';

const CHECK_TIMEOUT_MS = 3_000;

interface Check {
  readonly name: string;
  readonly ok: boolean;
  readonly detail: string;
}

function get(options: { socketPath?: string; url?: string; path: string }): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const target = options.url ? new URL(options.path, options.url) : undefined;
    const req = httpRequest(
      target
        ? { host: target.hostname, port: target.port, path: target.pathname + target.search, timeout: CHECK_TIMEOUT_MS }
        : { socketPath: options.socketPath, path: options.path, timeout: CHECK_TIMEOUT_MS },
      (res) => {
        let body = '';
        res.setEncoding('utf8').on('data', (c: string) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      },
    );
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', reject);
    req.end();
  });
}

async function run(flags: { socket: string; adminUrl: string; server?: string }): Promise<Check[]> {
  const checks: Check[] = [];
  try {
    // Any JSON answer from the data API proves the socket is served by an agent.
    const res = await get({ socketPath: flags.socket, path: '/v1/watch?prefix=..' });
    const isAgent = res.body.includes('"error"');
    checks.push({ name: 'socket reachable', ok: isAgent, detail: isAgent ? flags.socket : `${flags.socket} answered ${res.status} but not like an agent` });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
    const hint = code === 'ENOENT' ? 'no socket there: is the agent running, and is --socket / CONFIG_SIDECAR_SOCKET right?' : code === 'EACCES' ? 'permission denied: run as a member of the socket group (mode 0660)' : code;
    checks.push({ name: 'socket reachable', ok: false, detail: `${flags.socket}: ${hint}` });
  }
  const tokenPath = join(dirname(flags.socket), 'token');
  try {
    await access(tokenPath, constants.R_OK);
    const length = (await readFile(tokenPath)).length;
    checks.push({ name: 'token readable', ok: length > 0, detail: length > 0 ? tokenPath : `${tokenPath} is empty` });
  } catch (err) {
    checks.push({ name: 'token readable', ok: false, detail: `${tokenPath}: ${(err as NodeJS.ErrnoException).code ?? 'unreadable'} (needed only for the TCP listener)` });
  }
  try {
    const res = await get({ url: flags.adminUrl, path: '/readyz' });
    let detail = `${flags.adminUrl}/readyz answered ${res.status}`;
    try {
      const body = JSON.parse(res.body) as { checks?: Record<string, { ok: boolean; detail?: string }> };
      const failing = Object.entries(body.checks ?? {}).filter(([, c]) => !c.ok);
      if (failing.length) detail += `: ${failing.map(([k, c]) => `${k} ${c.detail ?? 'failing'}`).join('; ')}`;
    } catch {
      // not JSON: keep the status
    }
    checks.push({ name: 'agent ready', ok: res.status === 200, detail });
  } catch (err) {
    checks.push({ name: 'agent ready', ok: false, detail: `${flags.adminUrl}: ${(err as Error).message} (is --admin-url the agent's --admin-listen?)` });
  }
  if (flags.server) {
    try {
      const res = await get({ url: flags.server, path: '/v1/openapi.json' });
      checks.push({ name: 'server reachable', ok: res.status < 500, detail: `${flags.server} answered ${res.status}` });
    } catch (err) {
      checks.push({ name: 'server reachable', ok: false, detail: `${flags.server}: ${(err as Error).message}` });
    }
  }
  return checks;
}

export function register(program: Command): void {
  program
    .command('doctor')
    .description('Check that the local agent is usable: socket, pod token, readiness, and optionally the server.')
    .addOption(new Option('--socket <path>', 'agent socket').env('CONFIG_SIDECAR_SOCKET').default('/run/config-sidecar/agent.sock'))
    .addOption(new Option('--admin-url <url>', "the agent's admin listener").env(envNameFor('--admin-url')).default('http://127.0.0.1:8431'))
    .addOption(new Option('--server <url>', 'also check the control plane REST URL').env(envNameFor('--server')))
    .addHelpText(
      'after',
      `
Examples:
  $ config-sidecar doctor
  $ config-sidecar doctor --socket .config-sidecar/run/agent.sock --server http://127.0.0.1:8420`,
    )
    .action(
      action(async (flags: { socket: string; adminUrl: string; server?: string }) => {
        const checks = await run(flags);
        for (const check of checks) process.stdout.write(`${check.ok ? 'ok  ' : 'FAIL'}  ${check.name.padEnd(17)} ${check.detail}\n`);
        if (checks.some((c) => !c.ok)) process.exitCode = EXIT.failed;
      }),
    );
}
