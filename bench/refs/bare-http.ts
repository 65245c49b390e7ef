/**
 * Reference 1: the floor of any Node server. A bare node:http server that
 * answers every request with the same 1 KiB body, on a Unix socket or
 * 127.0.0.1. Usage: node bare-http.ts <socket-path | tcp> [bytes] [distinct] [agent-listener | agent-headers[-str|-flat]]
 * Prints `listening <socket-path | port>` once ready.
 *
 * With `distinct` N > 0 it holds N different bodies and answers each URL
 * with its own (a Map lookup by URL, the body made on the URL's first
 * request): the same work as the constant body plus what serving many
 * values costs a server that does nothing else (a lookup, and bodies that
 * are no longer all in the CPU's caches).
 *
 * With `agent-listener` as the fifth argument the server is created with
 * the agent's data-listener options (limits, timeouts, the 1 s connections
 * check, `noDelay`) and the agent's connection limit (shared/connection-limit.ts,
 * marked served in the handler as the agent does): what those cost per
 * request, apart from everything else the agent does (bench/native-cost.ts).
 *
 * With `agent-headers` as the fifth argument it answers with the six headers
 * the agent sends for a cached 200 (ETag, Age, X-Config-Revision,
 * Cache-Control, Content-Type, Content-Length; the same names and value
 * shapes) as the agent built them before h28: an object with numeric Age,
 * revision and length, made again when the age second changes. What the
 * agent's protocol headers alone cost node:http per response
 * (docs/FOOTPRINT-LOG.md, h28). `agent-headers-str` sends the same object
 * with every value a string; `agent-headers-flat` the same strings as a flat
 * `[name, value, …]` array (what the agent sends since h28).
 */
import { createServer } from 'node:http';
import { rmSync } from 'node:fs';
import type { ConnectionLimit } from '../../src/shared/connection-limit.ts';

const where = process.argv[2] ?? 'tcp';
const bytes = Number(process.argv[3] ?? 1024);
const distinct = Number(process.argv[4] ?? 0);
const agentListener = process.argv[5] === 'agent-listener';
const headerForm = process.argv[5]?.startsWith('agent-headers') === true ? process.argv[5] : undefined;
const body = Buffer.alloc(bytes, 'x');
const bodies = new Map<string, Buffer>();
// Imported only for that variant, so the plain reference loads nothing but node:http.
const agent = agentListener ? await import('../../src/agent/data-listeners.ts') : undefined;
const connectionLimit = agentListener ? await import('../../src/shared/connection-limit.ts') : undefined;
const options = agent && connectionLimit
  ? {
      maxHeaderSize: agent.MAX_HEADER_BYTES,
      headersTimeout: agent.HEADERS_TIMEOUT_MS,
      requestTimeout: agent.REQUEST_TIMEOUT_MS,
      keepAliveTimeout: agent.KEEPALIVE_TIMEOUT_MS,
      connectionsCheckingInterval: Math.min(connectionLimit.CONNECTIONS_CHECK_MS, agent.HEADERS_TIMEOUT_MS),
      noDelay: true,
    }
  : {};
/** The agent's headers for a 1 KiB raw item at revision 12345, as `headerForm` builds them, for the current age second. */
let agentHeaders: Record<string, string | number> | Array<string | number> = [];
let ageSecond = -1;
const started = Date.now();
function headersNow(length: number): Record<string, string | number> | Array<string | number> {
  const age = Math.floor((Date.now() - started) / 1000);
  if (age === ageSecond) return agentHeaders;
  ageSecond = age;
  const etag = '"12345-raw"';
  const type = 'application/octet-stream';
  if (headerForm === 'agent-headers-flat') {
    agentHeaders = ['etag', etag, 'age', String(age), 'x-config-revision', '12345', 'cache-control', 'no-store', 'content-type', type, 'content-length', String(length)];
  } else if (headerForm === 'agent-headers-str') {
    agentHeaders = { etag, age: String(age), 'x-config-revision': '12345', 'cache-control': 'no-store', 'content-type': type, 'content-length': String(length) };
  } else {
    agentHeaders = { etag, age, 'x-config-revision': 12345, 'cache-control': 'no-store', 'content-type': type, 'content-length': length };
  }
  return agentHeaders;
}
let limit: ConnectionLimit | undefined;
const server = createServer(options, (req, res) => {
  limit?.served(req.socket);
  let out: Buffer = body;
  if (distinct > 0) {
    const url = req.url ?? '/';
    out = bodies.get(url) ?? body;
    if (out === body && bodies.size < distinct) bodies.set(url, (out = Buffer.alloc(bytes, url)));
  }
  if (headerForm !== undefined) res.writeHead(200, headersNow(out.length));
  else res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': out.length });
  res.end(out);
});
server.keepAliveTimeout = 30_000;
if (agent && connectionLimit) limit = connectionLimit.limitConnections(server, { max: agent.MAX_CONNECTIONS, callerMarksServed: true });
const stop = (): void => {
  server.close();
  server.closeAllConnections();
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
if (where === 'tcp') {
  server.listen(0, '127.0.0.1', () => {
    const address = server.address();
    console.log(`listening ${typeof address === 'object' && address ? address.port : ''}`);
  });
} else {
  rmSync(where, { force: true });
  server.listen(where, () => console.log(`listening ${where}`));
}
