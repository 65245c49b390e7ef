#!/usr/bin/env node
/**
 * The `config-sidecar` bin. Before loading anything else it re-executes itself
 * (same PID) with the runtime settings of the command it runs
 * (runtime-settings.ts), so the agent has the same footprint however it is
 * started; then it loads the CLI.
 */
import { runtimePlan } from './runtime-settings.ts';

const plan = runtimePlan({ execPath: process.execPath, argv: process.argv, execArgv: process.execArgv, env: process.env });
if (plan && typeof process.execve === 'function') {
  try {
    process.execve(plan.file, plan.args, plan.env);
  } catch (err) {
    // Without the settings the agent still runs, only with a larger footprint.
    process.stderr.write(`config-sidecar: running without the runtime settings (${(err as Error).message})\n`);
  }
}
await import('./program.ts');
