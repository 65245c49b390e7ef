#!/usr/bin/env node
/**
 * The `config-sidecar` bin: loads the CLI. `config-sidecar agent` validates
 * its settings, then re-executes itself once (same PID) with its runtime
 * settings and the validated settings (cli/agent.ts); the re-executed image
 * comes back here and goes straight to the agent (cli/agent-run.ts), so the
 * process that serves reads loads neither the settings schema nor the
 * command table, and has the same footprint however it is started.
 */
const handedOver = process.argv[2] === 'agent' && (await (await import('./agent-run.ts')).runHandedOver());
if (!handedOver) await import('./program.ts');
