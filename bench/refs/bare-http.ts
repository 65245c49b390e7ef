/**
 * Reference 1: the floor of any Node server. A bare node:http server that
 * answers every request with the same 1 KiB body, on a Unix socket or
 * 127.0.0.1. Usage: node bare-http.ts <socket-path | tcp> [bytes] [distinct]
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
 */
import { createServer } from 'node:http';
import { rmSync } from 'node:fs';
import type { ConnectionLimit } from '../../src/shared/connection-limit.ts';

const where = process.argv[2] ?? 'tcp';
const bytes = Number(process.argv[3] ?? 1024);
const distinct = Number(process.argv[4] ?? 0);
const agentListener = process.argv[5] === 'agent-listener';
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
let limit: ConnectionLimit | undefined;
const server = createServer(options, (req, res) => {
  limit?.served(req.socket);
  let out: Buffer = body;
  if (distinct > 0) {
    const url = req.url ?? '/';
    out = bodies.get(url) ?? body;
    if (out === body && bodies.size < distinct) bodies.set(url, (out = Buffer.alloc(bytes, url)));
  }
  res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': out.length });
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
