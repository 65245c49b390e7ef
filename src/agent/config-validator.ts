/**
 * Validates a `--config` reload in a short-lived child process that runs the
 * one settings pipeline (agent-settings.ts: `yaml` and the zod schema) and
 * hands back the validated settings as JSON, so neither library is ever
 * loaded into the serving process. Loaded there, they stayed resident for
 * good: +13 MiB anonymous after the first reload; a worker thread left +23
 * MiB (its isolate's pages stay in the process); a child's all go back to
 * the kernel when it exits (docs/FOOTPRINT-LOG.md, r28).
 *
 * Refusals keep their meaning: a setting the schema refuses comes back as the
 * same `SettingError` (same setting, same message). A child that cannot
 * answer (killed, out of memory, timed out, unreadable output) is an
 * ordinary error saying so; either way the caller applies nothing.
 */
import { spawn } from 'node:child_process';
import type { Readable, Writable } from 'node:stream';
import { extname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SettingError } from '../shared/settings.ts';
import { checked, field, optional, record, string } from '../shared/shape-check.ts';
import type { Milliseconds } from '../shared/units.ts';
import type { AgentSettings } from './agent-settings.ts';
import { readAgentSettings } from './settings-shape.ts';

/** A reload whose validation takes longer than this is refused (the child is killed). Start-up's validation takes ~0.3 s. */
export const CONFIG_VALIDATION_TIMEOUT_MS: Milliseconds = 15_000;
/**
 * The child's node flags. Its peak adds to the pod's memory for a fraction of
 * a second, and it runs once: a 1 MiB young generation took ~7 MiB of
 * anonymous memory off it, V8's lite mode (no JIT, feedback allocated
 * lazily) another ~3 for ~20 ms; the old-space cap bounds what a hostile
 * file can make it allocate (a real config uses a few MiB; a child over the
 * cap dies and the reload is refused). docs/FOOTPRINT-LOG.md, r28.
 */
export const VALIDATOR_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=1', '--max-old-space-size=64'];
/** Only when built: node's type stripping (the agent run from source, `.ts`) needs WebAssembly, which lite mode turns off. */
const BUILT_ONLY_FLAGS: readonly string[] = ['--lite-mode'];
const OWN_EXTENSION = extname(fileURLToPath(import.meta.url));
/** The settings as JSON are a few KiB; a child writing more than this is refused, not buffered. */
const MAX_OUTPUT_BYTES = 4 * 1024 * 1024;
/** The child's stderr kept for the error message (a fatal error's first lines). */
const MAX_STDERR_BYTES = 2048;

/** The child's entry, next to this module in both layouts (`.ts` run by type stripping, `.js` built). */
export const VALIDATOR_SCRIPT = fileURLToPath(new URL(`./config-validator-main${OWN_EXTENSION}`, import.meta.url));

/** What the child writes on stdout: the settings, or the refusal. */
export type ValidatorAnswer =
  | { readonly ok: true; readonly settings: AgentSettings }
  | { readonly ok: false; readonly setting: string; readonly detail: string }
  | { readonly ok: false; readonly message: string };

export interface ConfigValidatorOptions {
  /** The child's entry (tests point it at a failing one). */
  readonly script?: string;
  readonly timeoutMs?: Milliseconds;
  readonly execPath?: string;
}

/** Runs the settings pipeline on `flags` (with `config` naming the file) in a child process. */
/** `signal`: the agent is stopping; the child is killed at once and the reload refused, so shutdown never waits for it. */
export type ConfigValidator = (flags: Readonly<Record<string, unknown>>, signal?: AbortSignal) => Promise<AgentSettings>;

/** Turns the child's stdout into settings, or throws the refusal it reports, or says what was wrong with it. */
export function settingsFromAnswer(text: string): AgentSettings {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new Error(`the config validator's answer is not JSON (${text.length} bytes)`);
  }
  const answer = checked((): ValidatorAnswer => {
    const o = record(json, '');
    if (o.ok === true) return { ok: true, settings: field(o, 'settings', '', readAgentSettings) };
    const setting = field(o, 'setting', '', (v, p) => optional(v, p, string));
    if (setting !== undefined) return { ok: false, setting, detail: field(o, 'detail', '', string) };
    return { ok: false, message: field(o, 'message', '', string) };
  });
  if (!answer.ok) throw new Error(`the config validator's answer is malformed (${answer.error})`);
  const value = answer.value;
  if (value.ok) return value.settings;
  if ('setting' in value) throw new SettingError(value.setting, value.detail);
  throw new Error(value.message);
}

export function createConfigValidator(options: ConfigValidatorOptions = {}): ConfigValidator {
  const script = options.script ?? VALIDATOR_SCRIPT;
  const timeoutMs = options.timeoutMs ?? CONFIG_VALIDATION_TIMEOUT_MS;
  const execPath = options.execPath ?? process.execPath;
  return (flags, signal) =>
    new Promise<AgentSettings>((resolve, reject) => {
      if (signal?.aborted) {
        reject(new Error('the config file was not validated: the agent is stopping'));
        return;
      }
      // A clean environment: NODE_OPTIONS (an inspector, a preload) is the agent's, and the settings come in as flags only.
      const child = spawn(execPath, [...VALIDATOR_NODE_FLAGS, ...(OWN_EXTENSION === '.ts' ? [] : BUILT_ONLY_FLAGS), script], { stdio: ['pipe', 'pipe', 'pipe'], env: {} });
      const out: Buffer[] = [];
      let outBytes = 0;
      let stderr = '';
      let failure: string | undefined;
      const fail = (why: string): void => {
        failure ??= why;
        child.kill('SIGKILL');
      };
      // Our own timer, not spawn's `timeout`: that one outlives a child that never started.
      const timer = setTimeout(() => fail(`it took longer than ${timeoutMs} ms`), timeoutMs);
      const stopping = (): void => fail('the agent is stopping');
      signal?.addEventListener('abort', stopping, { once: true });
      // `on`, not `once`: an 'error' without a listener would throw in the agent.
      child.on('error', (err) => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', stopping);
        reject(new Error(`cannot start the config validator (${(err as NodeJS.ErrnoException).code ?? err.message})`));
      });
      // Out of file descriptors (EMFILE, ENFILE) node makes no pipes and only emits the 'error' above.
      const { stdin, stdout, stderr: errors } = child as { stdin: Writable | null; stdout: Readable | null; stderr: Readable | null };
      if (!stdin || !stdout || !errors) return;
      stdout.on('data', (chunk: Buffer) => {
        outBytes += chunk.length;
        if (outBytes > MAX_OUTPUT_BYTES) fail(`it wrote more than ${MAX_OUTPUT_BYTES} bytes`);
        else out.push(chunk);
      });
      errors.setEncoding('utf8').on('data', (chunk: string) => {
        if (stderr.length < MAX_STDERR_BYTES) stderr += chunk.slice(0, MAX_STDERR_BYTES - stderr.length);
      });
      // A child that dies before reading its input breaks the pipe, and the exit says why; a pipe's own error ends in 'close' too.
      for (const pipe of [stdin, stdout, errors]) pipe.on('error', () => {});
      child.once('close', (code, exitSignal) => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', stopping);
        const why = failure ?? (exitSignal ? `it was killed by ${exitSignal}` : code !== 0 ? `it exited with code ${code}` : undefined);
        if (why !== undefined) {
          const said = stderr.trim().split('\n').find((line) => line.trim() !== '');
          reject(new Error(`the config file could not be validated: ${why}${said ? ` (${said.trim()})` : ''}`));
          return;
        }
        try {
          resolve(settingsFromAnswer(Buffer.concat(out).toString('utf8')));
        } catch (err) {
          reject(err instanceof Error ? err : new Error(String(err)));
        }
      });
      stdin.end(JSON.stringify(flags));
    });
}
