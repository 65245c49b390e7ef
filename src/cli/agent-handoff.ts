/**
 * The agent's validated settings, handed from the bin's first process image
 * to the one it re-executes (same PID, `process.execve`; cli/agent.ts). The
 * first image runs the one settings pipeline (agent/agent-settings.ts, zod)
 * and then is discarded by the re-exec; the image that serves reads takes
 * the result from one environment variable, checked here by hand, so it
 * never loads zod, nor the CLI's command table (cli/agent-run.ts;
 * docs/FOOTPRINT-LOG.md). The flags travel too: a `--config`
 * reload validates the file merged under them again.
 *
 * Trust: the text is bound to the process that wrote it, by its PID and
 * start time (process-identity.ts), which `execve` keeps and no other process
 * shares: a PID alone is 1 in every pod, so a value copied from another
 * agent's environment would pass. A value inherited or set by hand is not
 * taken (the settings are then validated as usual, and the re-exec still
 * happens: only a handoff this process wrote stops it); whoever starts the
 * process can give it any flags anyway. The guard (agent/settings-shape.ts)
 * checks every field's type against `AgentSettings`; the values themselves
 * were checked by the schema that made them.
 * Settings hold paths, URLs and item names, never a secret.
 */
import type { AgentSettings } from '../agent/agent-settings.ts';
import { readAgentSettings, readFlags } from '../agent/settings-shape.ts';
import type { ProcessIdentity } from './process-identity.ts';
import { checked, field, onlyKeys, record, ShapeError, type Checked } from '../shared/shape-check.ts';

/** Set by the bin for its own re-exec only. */
export const HANDOFF_ENV = 'CONFIG_SIDECAR_AGENT_HANDOFF';

const HANDOFF_VERSION = 1;

/**
 * Above this the settings are not handed over (Linux caps one environment
 * string at 128 KiB); the re-executed agent then validates them itself.
 */
export const HANDOFF_MAX_BYTES = 64 * 1024;

/** What the first image hands over: the settings it validated and the flags they came from. */
export interface Handoff {
  readonly settings: AgentSettings;
  /** Commander's flag values (strings, lists, `true`), for a `--config` reload. */
  readonly flags: Readonly<Record<string, unknown>>;
}

/** The handoff text for process `self`, or undefined when it has no identity or the text would be too large to pass in the environment. */
export function encodeHandoff(handoff: Handoff, self: ProcessIdentity | undefined): string | undefined {
  if (self === undefined) return undefined;
  const text = JSON.stringify({ v: HANDOFF_VERSION, pid: self.pid, start: self.start, settings: handoff.settings, flags: handoff.flags });
  return Buffer.byteLength(text) <= HANDOFF_MAX_BYTES ? text : undefined;
}

/** Whether `text` names process `self` (PID and start time) as its writer, whatever else it holds. */
export function handoffWrittenBy(text: string, self: ProcessIdentity | undefined): boolean {
  try {
    const o = JSON.parse(text) as { pid?: unknown; start?: unknown } | null;
    return self !== undefined && o?.pid === self.pid && o.start === self.start;
  } catch {
    return false;
  }
}

/** The settings the previous image of process `self` validated, or why they cannot be taken. */
export function decodeHandoff(text: string, self: ProcessIdentity | undefined): Checked<Handoff> {
  if (self === undefined) return { ok: false, error: 'this process\'s start time cannot be read' };
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    return { ok: false, error: 'not JSON' };
  }
  return checked(() => {
    const o = record(json, '');
    onlyKeys(o, ['v', 'pid', 'start', 'settings', 'flags'], '');
    if (o.v !== HANDOFF_VERSION) throw new ShapeError(`handoff version ${String(o.v)}, expected ${HANDOFF_VERSION}`);
    if (o.pid !== self.pid) throw new ShapeError(`written by process ${String(o.pid)}, not this one (${self.pid})`);
    if (o.start !== self.start) throw new ShapeError(`written by an earlier process ${self.pid} (started ${String(o.start).slice(0, 80)}), not this one (started ${self.start})`);
    return { settings: field(o, 'settings', '', readAgentSettings), flags: field(o, 'flags', '', readFlags) };
  });
}
