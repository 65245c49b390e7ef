/**
 * A small TCP proxy for partition tests: it forwards 127.0.0.1:port to a
 * target and can `cut` the path (every connection reset, new ones accepted
 * and dropped at once: the peer is unreachable), `freeze` it (connections
 * stay open but no byte is forwarded either way: a silent network path, the
 * case keepalive and heartbeats exist for) and `restore` it.
 */
import { createServer, connect, type Server, type Socket } from 'node:net';
import { once } from 'node:events';

export type ProxyMode = 'forward' | 'cut' | 'frozen';

export interface TcpProxy {
  /** host:port to point the client at. */
  readonly address: string;
  readonly mode: ProxyMode;
  cut(): void;
  freeze(): void;
  restore(): void;
  /** Points new connections at another target (a server started again elsewhere); open ones are reset. */
  retarget(target: string): void;
  close(): Promise<void>;
}

interface Pair {
  readonly client: Socket;
  readonly upstream: Socket;
}

export async function startTcpProxy(target: string): Promise<TcpProxy> {
  const split = (t: string): [string, number] => [t.slice(0, t.lastIndexOf(':')), Number(t.slice(t.lastIndexOf(':') + 1))];
  let [host, port] = split(target);
  const pairs = new Set<Pair>();
  let mode: ProxyMode = 'forward';

  const link = (pair: Pair): void => {
    pair.client.pipe(pair.upstream);
    pair.upstream.pipe(pair.client);
    pair.client.resume();
    pair.upstream.resume();
  };
  const unlink = (pair: Pair): void => {
    pair.client.unpipe(pair.upstream);
    pair.upstream.unpipe(pair.client);
    pair.client.pause();
    pair.upstream.pause();
  };
  const destroy = (pair: Pair): void => {
    pair.client.destroy();
    pair.upstream.destroy();
    pairs.delete(pair);
  };

  const server: Server = createServer((client) => {
    if (mode === 'cut') {
      client.destroy();
      return;
    }
    const upstream = connect(port, host);
    const pair = { client, upstream };
    pairs.add(pair);
    client.on('error', () => destroy(pair));
    upstream.on('error', () => destroy(pair));
    client.on('close', () => destroy(pair));
    upstream.on('close', () => destroy(pair));
    if (mode === 'forward') link(pair);
    else unlink(pair);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const address = server.address();
  if (!address || typeof address === 'string') throw new Error('proxy has no TCP address');
  return {
    address: `127.0.0.1:${address.port}`,
    get mode() {
      return mode;
    },
    cut() {
      mode = 'cut';
      for (const pair of [...pairs]) destroy(pair);
    },
    freeze() {
      mode = 'frozen';
      for (const pair of pairs) unlink(pair);
    },
    restore() {
      mode = 'forward';
      for (const pair of pairs) link(pair);
    },
    retarget(next) {
      [host, port] = split(next);
      for (const pair of [...pairs]) destroy(pair);
    },
    async close() {
      for (const pair of [...pairs]) destroy(pair);
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** Waits until a metric satisfies `ok`, polling the admin endpoint (bounded by `timeoutMs`). */
export async function waitForMetric(read: () => Promise<number | undefined>, ok: (value: number | undefined) => boolean, what: string, timeoutMs = 30_000): Promise<number> {
  const started = Date.now();
  for (;;) {
    const value = await read();
    if (ok(value)) return Date.now() - started;
    if (Date.now() - started > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (last ${value})`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}
