/**
 * The Prometheus text exposition format (0.0.4), the part a writer needs:
 * the content type, the escapes for HELP text and label values, and how a
 * sample's value is spelled. https://prometheus.io/docs/instrumenting/exposition_formats/
 */

export const PROMETHEUS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

/** HELP text: backslash and line feed are escaped (a quote is not). */
export function escapeHelp(text: string): string {
  return text.replace(/[\\\n]/g, (c) => (c === '\\' ? '\\\\' : '\\n'));
}

/** A label value: backslash, double quote and line feed are escaped. */
export function escapeLabelValue(text: string): string {
  return text.replace(/[\\"\n]/g, (c) => (c === '\\' ? '\\\\' : c === '"' ? '\\"' : '\\n'));
}

/** A value as Prometheus reads it (Go's ParseFloat): `+Inf`, `-Inf`, `NaN`, or JavaScript's shortest round-trip decimal. */
export function formatValue(value: number): string {
  if (Number.isNaN(value)) return 'NaN';
  if (value === Infinity) return '+Inf';
  if (value === -Infinity) return '-Inf';
  return String(value);
}

/** `{a="x",b="y"}` for the pairs given (already in order), or '' for none. */
export function formatLabels(names: readonly string[], values: readonly string[]): string {
  if (names.length === 0) return '';
  let out = '{';
  names.forEach((name, i) => (out += `${i === 0 ? '' : ','}${name}="${escapeLabelValue(values[i] ?? '')}"`));
  return `${out}}`;
}

/** The `# HELP` and `# TYPE` lines that open a family. */
export function familyHeader(name: string, help: string, type: 'counter' | 'gauge' | 'histogram'): string {
  return `# HELP ${name} ${escapeHelp(help)}\n# TYPE ${name} ${type}\n`;
}
