/**
 * A TCP proxy on 127.0.0.1 for network faults between an agent and the
 * server. `freeze()` stops moving bytes both ways on every connection, old and
 * new (a black-holed network: connections stay open, nothing arrives);
 * `thaw()` resumes them, queued bytes included.
 */
import { createServer, connect, type Server, type Socket } from 'node:net';

export interface TcpProxy {
  /** host:port to give the client instead of the upstream. */
  readonly address: string;
  readonly port: number;
  freeze(): void;
  thaw(): void;
  /** New connections go to `upstream`; open ones are cut (a restarted server on another port). */
  retarget(upstream: { host: string; port: number }): void;
  close(): Promise<void>;
}

export async function startTcpProxy(initial: { host: string; port: number }): Promise<TcpProxy> {
  let upstream = initial;
  const pairs = new Set<[Socket, Socket]>();
  let frozen = false;
  const server: Server = createServer((client) => {
    const remote = connect(upstream.port, upstream.host);
    const pair: [Socket, Socket] = [client, remote];
    pairs.add(pair);
    client.pipe(remote);
    remote.pipe(client);
    if (frozen) for (const s of pair) s.pause();
    const end = (): void => {
      pairs.delete(pair);
      client.destroy();
      remote.destroy();
    };
    client.on('error', end).on('close', end);
    remote.on('error', end).on('close', end);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  return {
    address: `127.0.0.1:${port}`,
    port,
    freeze() {
      frozen = true;
      for (const pair of pairs) for (const s of pair) s.pause();
    },
    thaw() {
      frozen = false;
      for (const pair of pairs) for (const s of pair) s.resume();
    },
    retarget(next) {
      upstream = next;
      for (const pair of [...pairs]) for (const s of pair) s.destroy();
    },
    async close() {
      for (const pair of pairs) for (const s of pair) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
