/**
 * What node:http's `writeHead` costs for the agent's six cached-200 headers
 * in each form its public API takes (docs/FOOTPRINT-LOG.md, h28): CPU ns per
 * call on one socket-less keep-alive `ServerResponse` (no I/O), the head
 * flattened as a write would read it. Each form runs in a fresh process
 * (the same shapes in node's code every time), the forms taking turns for
 * `--rounds` rounds; each figure is the fastest tenth of the round's calls.
 *
 *   flock /tmp/bench.lock taskset -c 1 node bench/response-head-forms.ts --rounds 3 --calls 2000000
 *
 * Forms: `bare` (bare-http.ts's two headers, an object), `object` (the six
 * as the agent sent them before h28, one shared object with numeric Age,
 * revision and length), `object-strings`, `list` (a flat [name, value, …]
 * list, shared), `list-strings`, `list-fresh` (a new list per call, as the
 * agent makes it since h28), `pairs` ([[name, value], …]), `title-case`
 * (the list with `ETag`, `Age`, … spelt as in the RFCs), `content-first`
 * (the list with the content headers first), `reason` (`writeHead(200,
 * 'OK', list)`), `no-date` (`sendDate = false`: drops a header, so not for
 * the agent; what node's own Date costs), `strict-length`
 * (`strictContentLength`), `set-headers` (`res.setHeaders(Map)` then
 * `writeHead(200)`), `unvalidated` (node's internal per-response header
 * store, which it writes without validating: not public, the floor).
 */
import { spawnSync } from 'node:child_process';
import type { OutgoingHttpHeader, OutgoingHttpHeaders } from 'node:http';
import { fileURLToPath } from 'node:url';
import { benchArgs, wholeNumber } from './lib/args.ts';
import { median } from './lib/stats.ts';
import { headlessResponse } from './lib/headless-response.ts';

const FORMS = ['bare', 'object', 'object-strings', 'list', 'list-strings', 'list-fresh', 'pairs', 'title-case', 'content-first', 'reason', 'no-date', 'strict-length', 'set-headers', 'unvalidated'] as const;
type Form = (typeof FORMS)[number];

const values = benchArgs(`Usage: node bench/response-head-forms.ts [--rounds 3] [--calls 2000000] [--forms ${FORMS.join(',')}]`, {
  rounds: { type: 'string', default: '3' },
  calls: { type: 'string', default: '2000000' },
  forms: { type: 'string', default: FORMS.join(',') },
  /** Internal: measure one form in this process. */
  child: { type: 'string' },
});
const calls = wholeNumber('calls', values.calls, 10);
const BATCHES = 10;
const ETAG = '"12345-raw"';
const TYPE = 'application/octet-stream';

/** The headers `form` hands node (checked by node, not by the types: node:http types Age as a string). */
function headersOf(form: Form): unknown {
  const list = ['etag', ETAG, 'age', 7, 'x-config-revision', 12345, 'cache-control', 'no-store', 'content-type', TYPE, 'content-length', 1024];
  switch (form) {
    case 'bare':
      return { 'content-type': TYPE, 'content-length': 1024 };
    case 'object':
      return { etag: ETAG, age: 7, 'x-config-revision': 12345, 'cache-control': 'no-store', 'content-type': TYPE, 'content-length': 1024 };
    case 'object-strings':
      return { etag: ETAG, age: '7', 'x-config-revision': '12345', 'cache-control': 'no-store', 'content-type': TYPE, 'content-length': '1024' };
    case 'list-strings':
      return list.map(String);
    case 'pairs':
      return [['etag', ETAG], ['age', '7'], ['x-config-revision', '12345'], ['cache-control', 'no-store'], ['content-type', TYPE], ['content-length', '1024']];
    case 'title-case':
      return ['ETag', ETAG, 'Age', 7, 'X-Config-Revision', 12345, 'Cache-Control', 'no-store', 'Content-Type', TYPE, 'Content-Length', 1024];
    case 'content-first':
      return ['content-type', TYPE, 'content-length', 1024, 'etag', ETAG, 'age', 7, 'x-config-revision', 12345, 'cache-control', 'no-store'];
    case 'set-headers':
      return new Map<string, string | number>([['etag', ETAG], ['age', 7], ['x-config-revision', 12345], ['cache-control', 'no-store'], ['content-type', TYPE], ['content-length', 1024]]);
    case 'unvalidated':
      // node's own store: lower-case name → [name, value].
      return Object.fromEntries(Array.from({ length: list.length / 2 }, (_, i) => [String(list[2 * i]), [list[2 * i], list[2 * i + 1]]])) as OutgoingHttpHeaders;
    default:
      return list;
  }
}

function measure(form: Form): number {
  const res = headlessResponse();
  if (form === 'no-date') res.sendDate = false;
  if (form === 'strict-length') res.strictContentLength = true;
  const internal = res as unknown as Record<string | symbol, unknown> & { _header: string | null };
  const outHeaders = Object.getOwnPropertySymbols(res).find((k) => String(k) === 'Symbol(kOutHeaders)');
  if (outHeaders === undefined) throw new Error("node's ServerResponse has no kOutHeaders: this node is not the one measured");
  const shared = headersOf(form);
  let bytes = 0;
  let age = 0;
  const once = (): void => {
    // node refuses a second head; clearing its internal `_header` lets one response stand for many (bench only).
    internal._header = null;
    if (form === 'list-fresh') {
      age = (age + 1) & 7;
      res.writeHead(200, ['etag', ETAG, 'age', age, 'x-config-revision', 12345, 'cache-control', 'no-store', 'content-type', TYPE, 'content-length', 1024]);
    } else if (form === 'reason') res.writeHead(200, 'OK', shared as OutgoingHttpHeader[]);
    else if (form === 'set-headers') {
      internal[outHeaders] = null;
      res.setHeaders(shared as Map<string, string | number>);
      res.writeHead(200);
    } else if (form === 'unvalidated') {
      internal[outHeaders] = shared;
      res.writeHead(200);
    } else res.writeHead(200, shared as OutgoingHttpHeaders);
    bytes += Buffer.byteLength(internal._header ?? '', 'latin1');
  };
  for (let i = 0; i < calls / 5; i++) once();
  let best = Infinity;
  for (let b = 0; b < BATCHES; b++) {
    const before = process.cpuUsage();
    for (let i = 0; i < calls / BATCHES; i++) once();
    const used = process.cpuUsage(before);
    best = Math.min(best, ((used.user + used.system) * 1000) / (calls / BATCHES));
  }
  if (bytes === 0) throw new Error('node built no head');
  return best;
}

if (values.child !== undefined) {
  if (!(FORMS as readonly string[]).includes(values.child)) throw new Error(`unknown form ${values.child}`);
  console.log(String(measure(values.child as Form)));
} else {
  const forms = values.forms.split(',');
  for (const form of forms) {
    if (!(FORMS as readonly string[]).includes(form)) {
      console.error(`--forms takes a comma-separated list of ${FORMS.join(', ')}; got "${form}"`);
      process.exit(2);
    }
  }
  const self = fileURLToPath(import.meta.url);
  const samples = new Map<string, number[]>(forms.map((f) => [f, []]));
  for (let round = 0; round < wholeNumber('rounds', values.rounds); round++) {
    for (const form of forms) {
      const run = spawnSync(process.execPath, [self, '--child', form, '--calls', String(calls)], { encoding: 'utf8' });
      if (run.status !== 0) throw new Error(`${form}: ${run.stderr}`);
      samples.get(form)?.push(Number(run.stdout.trim()));
    }
  }
  console.log(`${values.rounds} rounds × ${calls} writeHead calls per form (socket-less response, head flattened); CPU ns per call, median of the rounds (range)`);
  for (const [form, ns] of samples) console.log(`${form.padEnd(15)} ${median(ns).toFixed(0).padStart(5)} ns (${Math.min(...ns).toFixed(0)}–${Math.max(...ns).toFixed(0)})`);
}
