/**
 * Durations (`250ms`, `30s`, `5m`, `1h`, `90d`) and sizes (`512KiB`, `64MiB`) as
 * written in flags, environment variables and config files. Unit-named aliases
 * keep call sites honest about what a number means.
 */

export type Milliseconds = number;
export type Bytes = number;

const DURATION_UNITS: Record<string, Milliseconds> = {
  ms: 1,
  s: 1_000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
};

const SIZE_UNITS: Record<string, Bytes> = {
  B: 1,
  KiB: 1024,
  MiB: 1024 ** 2,
  GiB: 1024 ** 3,
  KB: 1000,
  MB: 1000 ** 2,
  GB: 1000 ** 3,
};

const DURATION_RE = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/;
const SIZE_RE = /^(\d+(?:\.\d+)?)(B|KiB|MiB|GiB|KB|MB|GB)?$/;

/** Parses `30s`-style durations; returns undefined when the text is not one. `0` alone means zero. */
export function parseDuration(text: string): Milliseconds | undefined {
  const trimmed = text.trim();
  if (trimmed === '0') return 0;
  const match = DURATION_RE.exec(trimmed);
  if (!match) return undefined;
  const value = Number(match[1]) * (DURATION_UNITS[match[2] as string] as number);
  return Number.isFinite(value) ? Math.round(value) : undefined;
}

/** Parses `64MiB`-style sizes (a bare number is bytes); returns undefined when the text is not one. */
export function parseSize(text: string): Bytes | undefined {
  const match = SIZE_RE.exec(text.trim());
  if (!match) return undefined;
  const value = Number(match[1]) * (SIZE_UNITS[match[2] ?? 'B'] as number);
  return Number.isFinite(value) ? Math.floor(value) : undefined;
}

export function formatDuration(ms: Milliseconds): string {
  if (ms % 86_400_000 === 0 && ms !== 0) return `${ms / 86_400_000}d`;
  if (ms % 3_600_000 === 0 && ms !== 0) return `${ms / 3_600_000}h`;
  if (ms % 60_000 === 0 && ms !== 0) return `${ms / 60_000}m`;
  if (ms % 1_000 === 0 && ms !== 0) return `${ms / 1_000}s`;
  return `${ms}ms`;
}

export function formatSize(bytes: Bytes): string {
  for (const unit of ['GiB', 'MiB', 'KiB'] as const) {
    const factor = SIZE_UNITS[unit] as number;
    if (bytes >= factor && bytes % factor === 0) return `${bytes / factor}${unit}`;
  }
  return `${bytes}B`;
}
