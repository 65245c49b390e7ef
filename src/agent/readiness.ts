/**
 * `/readyz` for the agent as a pure function of its state: ready once the
 * prefetch set is loaded and the Watch stream is connected, or has been lost
 * for less than max-stale after having been up (before the first connection
 * there is nothing to be stale from). Rendered files, when configured, must be
 * published too. Each check says why it fails.
 */
import type { Readiness } from '../shared/admin-server.ts';
import type { Milliseconds } from '../shared/units.ts';

export interface ReadinessState {
  readonly now: Milliseconds;
  /** When the stream was lost; undefined while connected. */
  readonly streamDownSince: Milliseconds | undefined;
  readonly everConnected: boolean;
  readonly maxStale: Milliseconds;
  readonly appliedRevision: number;
  readonly prefetch: { readonly done: boolean; readonly total: number; readonly failing: readonly string[] };
  readonly tokenHealthy: boolean;
  /** Why the server last refused or ended the stream (its own words), until the stream connects again. */
  readonly streamError?: string | undefined;
  readonly files?: { readonly ready: boolean; readonly files: Readonly<Record<string, { ok: boolean; detail?: string }>> } | undefined;
  /**
   * A warm-restart snapshot the agent serves from until its first stream
   * connects: ready within max-stale of the snapshot's time.
   */
  readonly snapshot?: { readonly takenAt: Milliseconds; readonly revision: number; readonly values: number; readonly rings?: number } | undefined;
  /** The memory limit, bounds, usage and headroom (memory-report.ts); informational. */
  readonly memory?: { readonly ok: boolean; readonly detail: string } | undefined;
}

const seconds = (ms: Milliseconds): number => Math.round(ms / 1000);

export function agentReadiness(s: ReadinessState): Readiness {
  const down = s.streamDownSince;
  const fromSnapshot = down !== undefined && !s.everConnected && s.snapshot !== undefined;
  const snapshotAge = s.snapshot ? s.now - s.snapshot.takenAt : 0;
  const streamOk = down === undefined || (s.everConnected && s.now - down <= s.maxStale) || (fromSnapshot && snapshotAge <= s.maxStale);
  const { prefetch } = s;
  const waiting = prefetch.failing.length || prefetch.total;
  const checks: Record<string, { ok: boolean; detail?: string }> = {
    prefetch: prefetch.done
      ? { ok: true }
      : { ok: false, detail: `waiting for ${waiting} item(s)${prefetch.failing.length ? `: ${prefetch.failing.slice(0, 5).join(', ')}` : ''}` },
    stream:
      down === undefined
        ? { ok: true, detail: `connected; applied revision ${s.appliedRevision}` }
        : {
            ok: streamOk,
            detail: `${s.everConnected ? 'disconnected' : 'not yet connected'} for ${seconds(s.now - down)}s (max-stale ${seconds(s.maxStale)}s)${s.streamError ? `: ${s.streamError}` : ''}`,
          },
    // An unreadable token file does not make the agent unready: the last token read stays in use.
    token: s.tokenHealthy ? { ok: true } : { ok: true, detail: 'token file unreadable; using the last token read' },
  };
  if (fromSnapshot && s.snapshot) {
    checks.snapshot = {
      ok: snapshotAge <= s.maxStale,
      detail: `serving ${s.snapshot.values} value(s)${s.snapshot.rings ? ` and ${s.snapshot.rings} key ring(s)` : ''} from a snapshot at revision ${s.snapshot.revision}, current ${seconds(snapshotAge)}s ago (max-stale ${seconds(s.maxStale)}s), stale-marked until the stream connects`,
    };
  }
  if (s.memory) checks.memory = s.memory;
  let ready = prefetch.done && streamOk;
  if (s.files) {
    for (const [path, health] of Object.entries(s.files.files)) checks[`file:${path}`] = health;
    ready = ready && s.files.ready;
  }
  return { ready, checks };
}

/** gRPC UNAUTHENTICATED and PERMISSION_DENIED (numeric values from the gRPC spec). */
const GRPC_UNAUTHENTICATED = 16;
const GRPC_PERMISSION_DENIED = 7;

/**
 * The server's reason for ending the Watch stream, with what to check: a
 * missing, wrong or expired token, or one too narrow for the prefixes.
 */
export function describeStreamError(code: number, details: string): string {
  const reason = details || `gRPC status ${code}`;
  if (code === GRPC_UNAUTHENTICATED) return `the server refused the agent's token: ${reason} (check --token-file and that the server knows the token)`;
  if (code === GRPC_PERMISSION_DENIED) return `the server refused the prefixes for this token: ${reason} (check --prefix and the token's role bindings, docs/AUTH.md)`;
  return `the server ended the stream: ${reason}`;
}
