/**
 * The pod token the TCP listener requires (`x-config-sidecar-token`), and
 * what one connection has proved with it (docs/ARCHITECTURE.md, decisions:
 * "The pod token is proved once per TCP connection"). A connection's first
 * request with the token takes the constant-time check; a later request on
 * the same connection whose header is the identical string is accepted by a
 * string comparison with what that connection already proved. Any other
 * string, and every fresh connection, takes the full check; any refusal (a
 * missing header too) drops the connection's proof.
 */
import { timingSafeEqual } from 'node:crypto';

/**
 * What one TCP connection has proved. The listener keeps it per socket
 * (data-listeners.ts, a WeakMap: nothing is added to node's Socket), so it
 * dies with the connection; the handler fills it in when the full check
 * passes and empties it when a check fails.
 */
export interface TokenProof {
  /** The header value that passed the constant-time check on this connection. */
  token: string | undefined;
  /** The pod token it was checked against: a proof never outlives a change of the token buffer. */
  against: Buffer | undefined;
}

export function newTokenProof(): TokenProof {
  return { token: undefined, against: undefined };
}

/**
 * Where a presented pod token is compared: one buffer, reused and zero-filled
 * after each comparison (`Buffer.from` per request cost an allocation and left
 * a copy of the token in Node's shared pool).
 */
let tokenScratch = Buffer.alloc(0);

function tokenMatches(presented: string, expected: Buffer): boolean {
  if (expected.length === 0 || Buffer.byteLength(presented) !== expected.length) return false;
  if (tokenScratch.length !== expected.length) tokenScratch = Buffer.alloc(expected.length);
  tokenScratch.write(presented);
  const matches = timingSafeEqual(tokenScratch, expected);
  tokenScratch.fill(0);
  return matches;
}

/**
 * True when `presented` (the header; node joins a repeated one into one
 * string, which is then not the token) is the pod token. `proof` is the
 * connection's, or undefined where there is no connection to remember it by.
 *
 * The identical-string shortcut can only leak, through its timing, how much
 * of a presented string matches the one this connection already sent; and a
 * mismatch drops the proof (and the 401 closes the connection), so a
 * connection shows at most one such comparison.
 */
export function podTokenAccepted(presented: string | string[] | undefined, expected: Buffer, proof: TokenProof | undefined): boolean {
  if (proof === undefined) return typeof presented === 'string' && tokenMatches(presented, expected);
  if (typeof presented === 'string') {
    if (proof.token === presented && proof.against === expected) return true;
    if (tokenMatches(presented, expected)) {
      proof.token = presented;
      proof.against = expected;
      return true;
    }
  }
  // Any refusal, a missing header too, drops the proof: requests already pipelined behind it prove the token again.
  proof.token = undefined;
  proof.against = undefined;
  return false;
}
