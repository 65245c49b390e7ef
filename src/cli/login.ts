/**
 * `config-sidecar login`: checks a token against the server and stores it
 * (mode 0600, in a 0700 directory) with the server URL, so later commands need
 * neither CONFIG_SIDECAR_TOKEN nor --token-file. A token the server refuses is
 * not stored. The token never comes from a flag value (`ps` would show it).
 */
import { Option, type Command } from 'commander';
import { readSecretSetting, envNameFor } from '../shared/settings.ts';
import { action, CliError, EXIT } from './cli-util.ts';
import { call, DEFAULT_SERVER, resolveServer, storeLogin } from './server-client.ts';

/** A prefix no item uses: any answer but 401 proves the server knows the token. */
const PROBE_PATH = '/v1/list/config-sidecar-login-check';

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8').trim();
}

export function register(program: Command): void {
  program
    .command('login')
    .description('Check a token against the server and store it (mode 0600) for later commands.')
    .addOption(new Option('--server <url>', `control plane REST URL (default: ${DEFAULT_SERVER})`).env(envNameFor('--server')))
    .addOption(new Option('--token-file <file>', 'read the token from this file (else CONFIG_SIDECAR_TOKEN, else stdin)'))
    .addHelpText(
      'after',
      `
The token and server go to $XDG_CONFIG_HOME/config-sidecar/ (~/.config/config-sidecar/),
or $CONFIG_SIDECAR_LOGIN_DIR. CONFIG_SIDECAR_TOKEN and --token-file still win when set.

Examples:
  $ config-sidecar login --server http://127.0.0.1:8420 < .config-sidecar/root-token
  $ printf %s "$TOKEN" | config-sidecar login --server https://config.example.com
  $ config-sidecar list production            # uses the stored token and server

Exit codes: 0 stored, 1 the server refused the token (nothing stored), 2 bad usage, 3 server unreachable.`,
    )
    .action(
      action(async (flags: { server?: string; tokenFile?: string }) => {
        let token = readSecretSetting({ fileFlag: '--token-file', file: flags.tokenFile, envVar: 'CONFIG_SIDECAR_TOKEN' });
        if (!token) {
          if (process.stdin.isTTY) throw new CliError('give the token on stdin (`config-sidecar login < token-file`), with --token-file, or in CONFIG_SIDECAR_TOKEN', EXIT.usage);
          token = await readStdin();
        }
        if (!token) throw new CliError('no token: stdin was empty; give it on stdin, with --token-file, or in CONFIG_SIDECAR_TOKEN', EXIT.usage);
        const server = resolveServer(flags.server);
        try {
          await call({ server, token }, 'GET', PROBE_PATH).catch((err: unknown) => {
            // 403/404: the server knows the token, it just may not list that prefix.
            if (err instanceof CliError && err.exitCode !== EXIT.unreachable && !/\(unauthenticated\)$/.test(err.message)) return {};
            throw err;
          });
        } catch (err) {
          if (err instanceof CliError && /\(unauthenticated\)$/.test(err.message)) {
            throw new CliError(`the server at ${server} refused the token (${err.message}); nothing stored`, EXIT.failed);
          }
          throw err;
        }
        const stored = storeLogin(server, token);
        process.stdout.write(`logged in to ${server}; token stored in ${stored} (mode 0600)\n`);
      }),
    );
}
