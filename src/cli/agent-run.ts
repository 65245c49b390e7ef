/**
 * The agent's process once its settings are settled: starts the agent,
 * installs the signal handling, and turns a start-up failure into the CLI's
 * exit codes (cli-util.ts). Reached two ways: from the `agent` command when
 * the bin does not re-execute (cli/agent.ts), and straight from the bin
 * (main.ts) in the re-executed image, which takes the handoff
 * (agent-handoff.ts) and so loads neither the settings schema (zod) nor the
 * CLI's command table (commander).
 */
import type { AgentSettings } from '../agent/agent-settings.ts';
import type { MemoryLimit } from '../agent/memory-limit.ts';
import { decodeHandoff, HANDOFF_ENV } from './agent-handoff.ts';
import { action } from './cli-util.ts';
import { processIdentity } from './process-identity.ts';

/** Runs the agent; `memory` when the caller already read the limit (agent/memory-budget.ts). */
export async function runAgent(settings: AgentSettings, flags: Readonly<Record<string, unknown>>, memory?: MemoryLimit): Promise<void> {
  const [{ startAgent, DRAIN_TIMEOUT_MS }, { agentMemory }, { exitOnSignals }, { createLogger }] = await Promise.all([
    import('../agent/agent.ts'),
    import('../agent/memory-budget.ts'),
    import('../shared/shutdown.ts'),
    import('../shared/logger.ts'),
  ]);
  const logger = createLogger({ component: 'agent', level: settings.logLevel });
  const started = startAgent(settings, { flags: { ...flags }, logger, memory: memory ?? agentMemory(settings).memory });
  // Installed before anything listens: a SIGTERM during start-up (which then finishes and closes)
  // must never meet the default action. close() drains for DRAIN_TIMEOUT_MS, then cuts connections.
  exitOnSignals({ close: async () => (await started).close(), logger, graceMs: DRAIN_TIMEOUT_MS });
  await started;
}

/**
 * In the re-executed image: runs the agent from the handoff and resolves
 * true, or resolves false when there is none to take (the `agent` command
 * then validates the settings itself; a handoff it sees, even a refused
 * one, stops it from re-executing again).
 */
export async function runHandedOver(): Promise<boolean> {
  const text = process.env[HANDOFF_ENV];
  if (!text) return false;
  const handed = decodeHandoff(text, processIdentity());
  if (!handed.ok) {
    process.stderr.write(`config-sidecar: validating the settings again (${HANDOFF_ENV}: ${handed.error})\n`);
    return false;
  }
  // Nothing the agent starts inherits it.
  delete process.env[HANDOFF_ENV];
  await action(() => runAgent(handed.value.settings, handed.value.flags))();
  return true;
}
