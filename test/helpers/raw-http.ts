/**
 * Raw HTTP/1.1 over TCP or a Unix socket, byte for byte (smuggling, bare LF,
 * obs-fold, partial heads): sends `bytes`, returns the first response's status
 * line and body, or how the connection ended. Bounded by `timeoutMs`.
 */
import { connect, type Socket } from 'node:net';

export interface RawAnswer {
  /** 0 when the server closed without a status line. */
  readonly status: number;
  readonly head: string;
  readonly body: string;
  /** 'closed' (by the server), 'timeout' (still open at the deadline), 'error'. */
  readonly ended: 'closed' | 'timeout' | 'error';
  readonly ms: number;
}

export type RawTarget = { readonly host: string; readonly port: number } | { readonly socketPath: string };

export function rawRequest(target: RawTarget, bytes: string | Buffer, timeoutMs = 5_000): Promise<RawAnswer> {
  const started = Date.now();
  return new Promise((resolve) => {
    const socket: Socket = 'socketPath' in target ? connect(target.socketPath) : connect(target.port, target.host);
    const chunks: Buffer[] = [];
    let done = false;
    const finish = (ended: RawAnswer['ended']): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      const text = Buffer.concat(chunks).toString('latin1');
      const split = text.indexOf('\r\n\r\n');
      const head = split < 0 ? text : text.slice(0, split);
      const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(head)?.[1] ?? 0);
      resolve({ status, head, body: split < 0 ? '' : text.slice(split + 4), ended, ms: Date.now() - started });
    };
    const timer = setTimeout(() => finish(Buffer.concat(chunks).length > 0 ? 'closed' : 'timeout'), timeoutMs);
    socket.on('data', (c: Buffer) => {
      chunks.push(c);
      // One full response is enough: the head and (when declared) the whole body.
      const text = Buffer.concat(chunks).toString('latin1');
      const split = text.indexOf('\r\n\r\n');
      if (split < 0) return;
      const length = Number(/\r\ncontent-length: *(\d+)/i.exec(text.slice(0, split))?.[1] ?? NaN);
      if (Number.isFinite(length) && Buffer.byteLength(text.slice(split + 4), 'latin1') >= length) finish('closed');
    });
    socket.on('end', () => finish('closed'));
    socket.on('close', () => finish('closed'));
    socket.on('error', () => finish('error'));
    socket.on('connect', () => socket.write(bytes));
  });
}
