/**
 * Reference 1: the floor of any Node server. A bare node:http server that
 * answers every request with the same 1 KiB body, on a Unix socket or
 * 127.0.0.1. Usage: node bare-http.ts <socket-path | tcp> [bytes]
 * Prints `listening <socket-path | port>` once ready.
 */
import { createServer } from 'node:http';
import { rmSync } from 'node:fs';

const where = process.argv[2] ?? 'tcp';
const body = Buffer.alloc(Number(process.argv[3] ?? 1024), 'x');
const server = createServer((_req, res) => {
  res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': body.length });
  res.end(body);
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
