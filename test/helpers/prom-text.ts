/**
 * A strict reader of the Prometheus text exposition format (0.0.4), for
 * tests: it throws, naming the line, on anything a scraper could misread —
 * a sample before its family's HELP and TYPE, a family declared twice or
 * split, a name or label name outside the allowed alphabet, an escape other
 * than `\\`, `\"` and `\n`, a duplicate series, a value that is not a
 * float, a histogram whose buckets are not cumulative, lack `+Inf` or
 * disagree with `_count`, a missing final newline.
 */

export interface Sample {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

export interface Family {
  readonly name: string;
  readonly type: 'counter' | 'gauge' | 'histogram' | 'summary' | 'untyped';
  readonly help: string;
  readonly samples: readonly Sample[];
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const TYPES = new Set(['counter', 'gauge', 'histogram', 'summary', 'untyped']);

function unescape(text: string, allowQuote: boolean, where: string): string {
  let out = '';
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c !== '\\') {
      out += c;
      continue;
    }
    const next = text[++i];
    if (next === '\\') out += '\\';
    else if (next === 'n') out += '\n';
    else if (next === '"' && allowQuote) out += '"';
    else throw new Error(`${where}: invalid escape \\${next ?? ''}`);
  }
  return out;
}

function parseValue(text: string, where: string): number {
  // Prometheus reads values with Go's strconv.ParseFloat: Inf and NaN in any case (prom-client writes `Nan`).
  if (/^\+?inf$/i.test(text)) return Infinity;
  if (/^-inf$/i.test(text)) return -Infinity;
  if (/^nan$/i.test(text)) return NaN;
  if (!/^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(text)) throw new Error(`${where}: value ${JSON.stringify(text)} is not a float`);
  return Number(text);
}

/** `{a="x",b="y"}` starting at `text[0] === '{'`; returns the labels and the rest after `}`. */
function parseLabels(text: string, where: string): { labels: Record<string, string>; rest: string } {
  const labels: Record<string, string> = {};
  let i = 1;
  for (;;) {
    if (text[i] === '}') return { labels, rest: text.slice(i + 1) };
    const eq = text.indexOf('=', i);
    if (eq < 0) throw new Error(`${where}: label without =`);
    const name = text.slice(i, eq);
    if (!LABEL_NAME.test(name)) throw new Error(`${where}: bad label name ${JSON.stringify(name)}`);
    if (name in labels) throw new Error(`${where}: label ${name} twice`);
    if (text[eq + 1] !== '"') throw new Error(`${where}: label ${name} value not quoted`);
    let j = eq + 2;
    while (j < text.length && text[j] !== '"') j += text[j] === '\\' ? 2 : 1;
    if (j >= text.length) throw new Error(`${where}: unterminated value of label ${name}`);
    const raw = text.slice(eq + 2, j);
    if (raw.includes('\n')) throw new Error(`${where}: raw newline in label ${name}`);
    labels[name] = unescape(raw, true, where);
    i = j + 1;
    if (text[i] === ',') i++;
    else if (text[i] !== '}') throw new Error(`${where}: expected , or } after label ${name}`);
  }
}

function familyOf(sampleName: string, type: Family['type'], family: string): boolean {
  if (sampleName === family) return type !== 'histogram';
  if (type === 'histogram') return [`${family}_bucket`, `${family}_sum`, `${family}_count`].includes(sampleName);
  if (type === 'summary') return [`${family}_sum`, `${family}_count`].includes(sampleName);
  return false;
}

function checkHistogram(f: Family): void {
  const series = new Map<string, { buckets: Array<[number, number]>; count?: number; sum?: number }>();
  for (const s of f.samples) {
    const { le, ...rest } = s.labels;
    const key = JSON.stringify(Object.entries(rest).sort());
    const entry = series.get(key) ?? { buckets: [] };
    series.set(key, entry);
    if (s.name.endsWith('_bucket')) {
      if (le === undefined) throw new Error(`${f.name}: a bucket without le`);
      entry.buckets.push([parseValue(le, `${f.name} le`), s.value]);
    } else if (le !== undefined) throw new Error(`${f.name}: le on ${s.name}`);
    else if (s.name.endsWith('_count')) entry.count = s.value;
    else entry.sum = s.value;
  }
  for (const [key, e] of series) {
    const where = `${f.name}${key}`;
    if (e.count === undefined || e.sum === undefined) throw new Error(`${where}: _sum or _count missing`);
    if (e.buckets.at(-1)?.[0] !== Infinity) throw new Error(`${where}: the last bucket is not le="+Inf"`);
    e.buckets.forEach(([bound, n], i) => {
      const [prevBound, prevN] = e.buckets[i - 1] ?? [-Infinity, 0];
      if (!(bound > prevBound)) throw new Error(`${where}: bucket bounds not increasing`);
      if (n < prevN) throw new Error(`${where}: buckets not cumulative`);
    });
    if (e.buckets.at(-1)?.[1] !== e.count) throw new Error(`${where}: +Inf bucket ${e.buckets.at(-1)?.[1]} != _count ${e.count}`);
  }
}

export function parsePrometheusText(text: string): Family[] {
  if (text !== '' && !text.endsWith('\n')) throw new Error('the exposition does not end with a newline');
  interface DraftFamily {
    name: string;
    type?: Family['type'];
    help?: string;
    samples: Sample[];
  }
  const families: DraftFamily[] = [];
  const seen = new Set<string>();
  const series = new Set<string>();
  const lines = text.split('\n');
  lines.pop();
  lines.forEach((line, n) => {
    const where = `line ${n + 1}`;
    // The format ignores empty lines (prom-client separates families with one).
    if (line === '') return;
    const current = families.at(-1);
    const meta = /^# (HELP|TYPE) (\S+) ?(.*)$/.exec(line);
    if (meta) {
      const [, kind = '', name = '', rest = ''] = meta;
      if (!METRIC_NAME.test(name)) throw new Error(`${where}: bad metric name ${JSON.stringify(name)}`);
      let family: DraftFamily;
      if (current?.name === name) family = current;
      else {
        if (seen.has(name)) throw new Error(`${where}: family ${name} declared twice or split`);
        if (current && current.type === undefined) throw new Error(`${where}: family ${current.name} has no TYPE`);
        seen.add(name);
        family = { name, samples: [] };
        families.push(family);
      }
      if (family.samples.length > 0) throw new Error(`${where}: ${kind} of ${name} after its samples`);
      if (kind === 'HELP') {
        if (family.help !== undefined) throw new Error(`${where}: second HELP for ${name}`);
        family.help = unescape(rest, false, where);
      } else {
        if (family.type !== undefined) throw new Error(`${where}: second TYPE for ${name}`);
        if (!TYPES.has(rest)) throw new Error(`${where}: unknown type ${rest}`);
        family.type = rest as Family['type'];
      }
      return;
    }
    if (line.startsWith('#')) return;
    const nameEnd = line.search(/[{ ]/);
    if (nameEnd < 0) throw new Error(`${where}: sample without a value`);
    const name = line.slice(0, nameEnd);
    if (!METRIC_NAME.test(name)) throw new Error(`${where}: bad metric name ${JSON.stringify(name)}`);
    let labels: Record<string, string> = {};
    let rest = line.slice(nameEnd);
    if (rest.startsWith('{')) ({ labels, rest } = parseLabels(rest, where));
    const parts = rest.trim().split(' ');
    if (!rest.startsWith(' ') || parts.length < 1 || parts.length > 2) throw new Error(`${where}: expected ' value [timestamp]'`);
    const value = parseValue(parts[0] ?? '', where);
    if (!current || current.type === undefined || current.help === undefined || !familyOf(name, current.type, current.name)) {
      throw new Error(`${where}: sample ${name} outside a family declared with HELP and TYPE before it`);
    }
    const id = name + JSON.stringify(Object.entries(labels).sort());
    if (series.has(id)) throw new Error(`${where}: series ${id} twice`);
    series.add(id);
    current.samples.push({ name, labels, value });
  });
  const out = families.map((f) => {
    if (f.type === undefined || f.help === undefined) throw new Error(`family ${f.name} lacks HELP or TYPE`);
    return { name: f.name, type: f.type, help: f.help, samples: f.samples };
  });
  for (const f of out) if (f.type === 'histogram') checkHistogram(f);
  return out;
}

/** A family as compared across versions: name, type, HELP and the label names its samples carry. */
export interface FamilyShape {
  readonly name: string;
  readonly type: string;
  readonly help: string;
  readonly labels: readonly string[];
}

export function familyShapes(families: readonly Family[]): FamilyShape[] {
  return families
    .map((f) => ({
      name: f.name,
      type: f.type,
      help: f.help,
      labels: [...new Set(f.samples.flatMap((s) => Object.keys(s.labels)))].filter((l) => l !== 'le' && l !== 'quantile').sort(),
    }))
    .sort((a, b) => a.name.localeCompare(b.name));
}
