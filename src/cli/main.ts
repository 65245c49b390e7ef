#!/usr/bin/env node
/**
 * The `config-sidecar` bin: loads the CLI. `config-sidecar agent` then
 * re-executes itself once (same PID) with its runtime settings and its
 * validated settings (cli/agent.ts, after the settings pipeline ran), so the
 * agent has the same footprint however it is started and the process that
 * serves reads never loads the settings schema.
 */
await import('./program.ts');
