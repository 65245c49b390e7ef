/**
 * The config validator's child process (config-validator.ts): reads the
 * agent's flags as JSON on stdin, runs the settings pipeline on them (the
 * `--config` file included), writes the validated settings or the refusal as
 * JSON on stdout, and exits. It holds no value or token: settings are paths,
 * URLs and item names.
 */
import { writeFileSync } from 'node:fs';
import { text } from 'node:stream/consumers';
import type { ValidatorAnswer } from './config-validator.ts';

// Before the schema loads (hence the dynamic imports below): the pod's OOM killer should pick
// this short-lived process, never the agent that serves reads.
try {
  writeFileSync('/proc/self/oom_score_adj', '1000');
} catch {
  // Not Linux, or /proc read-only: the cap on its heap still bounds it.
}

const answer = async (): Promise<ValidatorAnswer> => {
  const [{ loadAgentSettings }, { SettingError }, { readFlags }, { describeError }] = await Promise.all([
    import('./agent-settings.ts'),
    import('../shared/settings.ts'),
    import('./settings-shape.ts'),
    import('../shared/errors.ts'),
  ]);
  try {
    const flags = readFlags(JSON.parse(await text(process.stdin)), 'flags');
    return { ok: true, settings: await loadAgentSettings(flags) };
  } catch (err) {
    return err instanceof SettingError ? { ok: false, setting: err.setting, detail: err.detail } : { ok: false, message: describeError(err) };
  }
};

process.stdout.write(JSON.stringify(await answer()), () => process.exit(0));
