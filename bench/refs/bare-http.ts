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
 */
import { createServer } from 'node:http';
import { rmSync } from 'node:fs';

const where = process.argv[2] ?? 'tcp';
const bytes = Number(process.argv[3] ?? 1024);
const distinct = Number(process.argv[4] ?? 0);
const body = Buffer.alloc(bytes, 'x');
const bodies = new Map<string, Buffer>();
const server = createServer((req, res) => {
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
