/**
 * A keep-alive HTTP/1.1 `ServerResponse` with no socket: `writeHead` builds
 * its head and nothing is sent. What bench/handler-cost.ts `--write-head` and
 * bench/response-head-forms.ts hand node's response code, to time it alone.
 */
import { IncomingMessage, ServerResponse } from 'node:http';
import { Socket } from 'node:net';

export function headlessResponse(): ServerResponse {
  const req = new IncomingMessage(new Socket());
  req.method = 'GET';
  req.httpVersionMajor = 1;
  req.httpVersionMinor = 1;
  const res = new ServerResponse(req);
  res.shouldKeepAlive = true;
  return res;
}
