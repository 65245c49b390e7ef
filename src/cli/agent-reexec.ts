/**
 * The one re-exec of `config-sidecar agent` (same PID, `process.execve`): the
 * runtime settings the bin adds (runtime-settings.ts), the heap flags the
 * memory budget needs (agent/memory-budget.ts) and the validated settings
 * (agent-handoff.ts), so the image that serves reads starts with its final
 * flags and never runs the settings schema.
 */
import { runtimePlan, type ReexecPlan, type RuntimeInput } from './runtime-settings.ts';

/**
 * The re-exec, or undefined when nothing is missing (every runtime flag and
 * variable given by the operator, and no heap flag needed): the process then
 * runs as started. `heapFlags` gets the node flags the new image will have.
 */
export function agentReexecPlan(
  input: RuntimeInput,
  heapFlags: (execArgv: readonly string[]) => readonly string[] | undefined,
  handoff: Readonly<Record<string, string>>,
): ReexecPlan | undefined {
  const runtime = runtimePlan(input);
  const tail = input.argv.slice(1);
  // runtimePlan's args are [execPath, ...execArgv, ...its flags, ...argv.slice(1)].
  const execArgv = runtime ? runtime.args.slice(1, runtime.args.length - tail.length) : [...input.execArgv];
  const heap = heapFlags(execArgv) ?? [];
  if (!runtime && heap.length === 0) return undefined;
  const env: Record<string, string> = { ...(runtime?.env ?? definedEnv(input.env)), ...handoff };
  return { file: input.execPath, args: [input.execPath, ...heap, ...execArgv, ...tail], env };
}

function definedEnv(env: Readonly<Record<string, string | undefined>>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(env)) if (value !== undefined) out[name] = value;
  return out;
}
