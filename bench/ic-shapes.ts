/**
 * Which object shapes reach node's own HTTP, stream and event code in a
 * process (docs/FOOTPRINT-LOG.md, y16). Reads a V8
 * log written with `--log-ic --log-maps --log-maps-details` (e.g. the
 * agent's, from `bench/cached-read-ab.ts --agent-flag=--log-ic …`), and
 * prints every inline-cache site in those modules that saw more than four
 * shapes or went megamorphic, with its state and shape count; with
 * `--compare OTHER.log` (bare node:http under the same flags) the other
 * process's count next to it; with `--site MODULE:LINE:COL` (repeatable) each
 * shape that reached that site: its constructor and own property names
 * (symbols as `@name`); with `--by-source` as well, the number of distinct
 * shapes at each of those sites by the user of node:events they come from
 * (`sourceOf`: the data listener's and node's own, HTTP/2 for gRPC, undici,
 * the TCP servers, pino's destination, a FileHandle, …), the table of g27.
 *
 *   node bench/ic-shapes.ts --log /tmp/y16/agent.log [--compare /tmp/y16/bare.log] [--site events:492:23] [--by-source]
 *
 * node's internal functions come from the startup snapshot, so V8 logs no
 * code object for their bytecode and an `IC` line's address names no
 * function: a site is named by matching its line, column and property
 * against node's own sources instead.
 */
import { readFileSync } from 'node:fs';
import { benchArgs } from './lib/args.ts';

const values = benchArgs('Usage: node bench/ic-shapes.ts --log LOG [--compare OTHER_LOG] [--site MODULE:LINE:COL …]', {
  log: { type: 'string' },
  compare: { type: 'string' },
  site: { type: 'string', multiple: true },
  'by-source': { type: 'boolean', default: false },
});

interface Shape {
  readonly ctor: string;
  readonly keys: readonly string[];
}

interface Site {
  readonly kind: string;
  readonly line: number;
  readonly col: number;
  readonly key: string;
  readonly maps: Map<string, string>;
  readonly shapes: Map<string, Shape | undefined>;
  state: string;
}

const MODULES = /^(_http_|internal\/streams\/|events$|net$|internal\/http|internal\/stream_base|stream$)/;

/** node's own JavaScript sources by module id: `process.binding` is deprecated and untyped, but it is the only way to read them. */
function nodeSources(): Map<string, readonly string[]> {
  const natives = (process as unknown as { binding(name: 'natives'): Record<string, unknown> }).binding('natives');
  const out = new Map<string, readonly string[]>();
  for (const id of Object.keys(natives)) {
    const source = natives[id];
    if (typeof source === 'string' && MODULES.test(id)) out.set(id, source.split('\n'));
  }
  return out;
}

function parseShape(details: string): Shape {
  const text = details.replace(/\\n/g, '\n');
  const ctor = /constructor: 0x[0-9a-f]+ <JSFunction ([^ >]*)/.exec(text)?.[1] ?? /- type: (\w+)/.exec(text)?.[1] ?? '?';
  const keys = [...text.matchAll(/\n {2}\[\d+\]: 0x[0-9a-f]+(?:: \[String\]: #(\w+)| <Symbol: ([^>]+)>)/g)].map((m) => m[1] ?? `@${m[2] ?? '?'}`);
  return { ctor: /dictionary_map/.test(text) ? `${ctor}(dictionary)` : ctor, keys };
}

/** Every keyed and named IC site of the log, with the shapes it saw (described) and its last state. */
function readSites(path: string): Map<string, Site> {
  const shapes = new Map<string, Shape>();
  const sites = new Map<string, Site>();
  for (const line of readFileSync(path, 'utf8').split('\n')) {
    if (line.startsWith('map-details,')) {
      // map-details,TIME,ADDRESS,DETAILS (the details hold commas of their own)
      const addrStart = line.indexOf(',', 12) + 1;
      const addrEnd = line.indexOf(',', addrStart);
      shapes.set(BigInt(line.slice(addrStart, addrEnd)).toString(16), parseShape(line.slice(addrEnd + 1)));
      continue;
    }
    const f = line.split(',');
    if (f[0] === 'map-move' && f[2] !== undefined && f[3] !== undefined) {
      const moved = shapes.get(BigInt(f[2]).toString(16));
      if (moved !== undefined) shapes.set(BigInt(f[3]).toString(16), moved);
      continue;
    }
    const [kind, , , ln, col, , state, map, key] = f;
    if (kind === undefined || !kind.endsWith('IC') || kind === 'LoadGlobalIC' || map === undefined || key === undefined) continue;
    const id = `${kind}|${ln}|${col}|${key}`;
    let site = sites.get(id);
    if (site === undefined) {
      site = { kind, line: Number(ln), col: Number(col), key, maps: new Map(), shapes: new Map(), state: '' };
      sites.set(id, site);
    }
    const shape = shapes.get(BigInt(map).toString(16));
    site.maps.set(map, shape === undefined ? `? ${map}` : `${shape.ctor} [${shape.keys.length}] ${shape.keys.join(' ')}`);
    site.shapes.set(map, shape);
    site.state = state ?? '';
  }
  return sites;
}

/**
 * Which user of node:events a shape belongs to, told by the constructor and
 * the own properties (node's and the libraries' symbols) that only that user
 * adds. A Server or server-side Socket still being set up (no listening or
 * parser fields yet) is every node:http server's, the data listener's too.
 */
function sourceOf(shape: Shape | undefined): string {
  if (shape === undefined) return 'unknown (no map details)';
  const has = (key: string): boolean => shape.keys.includes(key);
  if (shape.ctor === 'SonicBoom') return 'pino destination (SonicBoom)';
  if (has('@kFd')) return 'FileHandle (fs/promises)';
  if (has('@kNativeFields')) return 'HTTP/2 session (gRPC)';
  if (has('@kSession')) return 'HTTP/2 stream (gRPC)';
  if (shape.ctor === 'Socket' && has('@server')) return 'HTTP/2 session\'s socket, closed (gRPC)';
  if (has('deserialize')) return 'grpc-js ClientReadableStream';
  if (has('@webSocketOptions')) return 'undici Pool/Client';
  if (has('@kConsume')) return 'undici response body';
  if (has('@kSetKeepAliveInterval')) return 'client TCP socket (undici; HTTP/2 before its session)';
  if (shape.ctor === 'Server') {
    if (has('_pipeName')) return 'http Server on a Unix socket (data listener)';
    if (has('_connectionKey')) return 'http Server on TCP (admin or TCP data listener)';
    return 'http Server under construction (every Server)';
  }
  if (shape.ctor === 'Socket') return 'server-side Socket (a listener\'s connections)';
  if (shape.ctor === 'IncomingMessage' || shape.ctor === 'ServerResponse') return `${shape.ctor} (request path)`;
  if (shape.ctor.startsWith('process')) return 'process';
  if (shape.ctor === 'EventEmitter' && shape.keys.length <= 5) return 'plain EventEmitter (a library\'s own)';
  return `${shape.ctor} [${shape.keys.length}]`;
}

/**
 * Counted by description (constructor and own property names), as the
 * `--site` listing: a map the GC moved without a `map-move` line is logged
 * again under a new address once the site is megamorphic, which would count
 * it twice; two live maps with the same properties (a field's
 * representation generalised) count once, so this is a lower bound.
 */
function printBySource(where: string, site: Site): void {
  const described = new Map<string, Shape | undefined>();
  for (const [map, shape] of site.shapes) if (BigInt(map) !== 0n) described.set(site.maps.get(map) ?? map, shape);
  const count = new Map<string, number>();
  for (const shape of described.values()) {
    const source = sourceOf(shape);
    count.set(source, (count.get(source) ?? 0) + 1);
  }
  console.log(`${site.kind} ${where} .${site.key}: ${described.size} distinct shapes by source`);
  for (const [source, n] of [...count].sort((a, b) => b[1] - a[1])) console.log(`  ${String(n).padStart(3)}  ${source}`);
}

function locate(sources: Map<string, readonly string[]>, site: Site): string | undefined {
  for (const [id, lines] of sources) {
    const text = lines[site.line - 1];
    if (text?.slice(Math.max(0, site.col - 2), site.col + site.key.length).includes(site.key) === true) return `${id}:${site.line}:${site.col}`;
  }
  return undefined;
}

const logPath = values.log;
if (logPath === undefined) throw new Error('give the V8 log to read (written with --log-ic --log-maps --log-maps-details)');
const sources = nodeSources();
const STATE: Record<string, string> = { N: 'megamorphic', P: 'polymorphic', '1': 'monomorphic' };
const other = new Map<string, Site>();
if (values.compare !== undefined) {
  for (const site of readSites(values.compare).values()) {
    const where = locate(sources, site);
    if (where !== undefined) other.set(`${site.kind} ${where} .${site.key}`, site);
  }
}
const wanted = new Set(values.site ?? []);
for (const site of readSites(logPath).values()) {
  const where = locate(sources, site);
  if (where === undefined) continue;
  if (wanted.size > 0) {
    if (!wanted.has(where)) continue;
    if (values['by-source']) {
      printBySource(where, site);
      continue;
    }
    console.log(`${site.kind} ${where} .${site.key}: ${site.maps.size} shapes, ${STATE[site.state] ?? site.state}`);
    for (const shape of new Set(site.maps.values())) console.log(`  ${shape}`);
    continue;
  }
  if (site.maps.size <= 4 && site.state !== 'N') continue;
  const name = `${site.kind} ${where} .${site.key}`;
  const seen = other.get(name);
  const compared = seen === undefined ? '' : `; other: ${seen.maps.size}, ${STATE[seen.state] ?? seen.state}`;
  console.log(`${name}: ${site.maps.size} shapes, ${STATE[site.state] ?? site.state}${compared}`);
}
