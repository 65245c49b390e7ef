/**
 * The warm-restart snapshot's file format (issue 19): the values the agent
 * serves, re-sealed under the snapshot key, with the applied position and the
 * time up to which they were known current.
 *
 *   magic (8) | header length (u32 BE) | header (JSON) | IV (12) | body ciphertext | GCM tag (16)
 *
 * The header is readable (it holds no value, no item name) and authenticated:
 * the whole prefix up to the IV is the GCM additional data, so an edited time
 * or position fails the tag like an edited value. The body is a run of
 * records `u32 meta length | meta JSON | u32 value length | plaintext`, sealed
 * as one AES-256-GCM stream so a writer never holds more than one record's
 * ciphertext per step, and a reader uses nothing before the tag is checked.
 * The header names the body's length, so a torn file is told from an edited
 * one; the key id (a hash of the key, not the key) tells a snapshot sealed
 * with another key.
 *
 * Format 2 adds key rings (issue 20's `?ring=1`): `rings` records after the
 * values, each the ring's metadata (members' versions, times and lengths)
 * and its plaintexts end to end, current first. Format 3 adds the staged
 * rollouts whose candidates the values are (`rollouts` records after the
 * rings, metadata only), so a canary restarted from its snapshot still
 * reports what it serves. Formats 1 (no rings) and 2 (no rollouts) still open.
 */
import { createCipheriv, createDecipheriv, createHash, randomBytes, type CipherGCM } from 'node:crypto';
import { zeroize } from '../../shared/crypto.ts';
import type { RolloutVersion } from '../../shared/fleet-proto.ts';
import type { ItemKind } from '../../shared/protocol.ts';
import type { Milliseconds } from '../../shared/units.ts';
import type { LogPosition } from '../../shared/watch-proto.ts';
import { releaseRing, type HeldRing } from '../ring-store.ts';
import type { SourcedValue } from '../value-source.ts';

export const SNAPSHOT_KEY_BYTES = 32;
const MAGIC = Buffer.from('CSSNAP\u0000\u0001', 'latin1');
const IV_BYTES = 12;
const TAG_BYTES = 16;
const U32 = 4;
const FORMAT_VERSION = 3;
/** Versions this agent opens: 1 had no rings, 2 no rollouts. */
const OPENS: ReadonlySet<unknown> = new Set([1, 2, FORMAT_VERSION]);

/** What the header says (authenticated, not secret). */
export interface SnapshotHeader {
  readonly v: 1 | 2 | typeof FORMAT_VERSION;
  /** Which key sealed it: a hash of the key, so a foreign key is named as such. */
  readonly keyId: string;
  /** The agent configuration it belongs to (prefixes, env and control plane: scopeOf). */
  readonly scope: string;
  /** Until when the values were known current (clock ms): the write time while the stream is up, else when it was lost. */
  readonly takenAt: Milliseconds;
  /** The applied position the values belong to (the freshness protocol's). */
  readonly position: LogPosition;
  readonly values: number;
  /** Key-ring records after the values (absent in format 1). */
  readonly rings?: number;
  /** Rollout-candidate marks after the rings (absent before format 3). */
  readonly rollouts?: number;
  /** Length of the body ciphertext: a shorter file is a torn write. */
  readonly bodyBytes: number;
}

/** One served value as the snapshot keeps it: what a consumer is handed, less its staleness (the snapshot's time says it). */
export type SnapshotValue = Omit<SourcedValue, 'staleSeconds'>;

/** One held key ring as the snapshot keeps it (plaintexts the owner zero-fills). */
export type SnapshotRing = HeldRing;

export type RefusalReason = 'truncated' | 'format' | 'foreign-key' | 'foreign-scope' | 'tampered' | 'expired';

export type OpenedSnapshot =
  | { readonly ok: true; readonly header: SnapshotHeader; readonly values: SnapshotValue[]; readonly rings: SnapshotRing[]; readonly rollouts: RolloutVersion[] }
  | { readonly ok: false; readonly reason: RefusalReason; readonly detail: string };

/** A key's id: enough to tell two keys apart, nothing about the key. */
export function keyIdOf(key: Buffer): string {
  return createHash('sha256').update('config-sidecar snapshot key id\u0000').update(key).digest('hex').slice(0, 16);
}

/**
 * The configuration a snapshot is valid for: values outside today's prefixes
 * or env, or from another control plane (the agent pointed at another
 * --server: another store, which only the server could otherwise tell), are
 * never served.
 */
export function scopeOf(prefixes: readonly string[], env: string, servers: readonly string[] = []): string {
  return JSON.stringify({ env, prefixes: [...prefixes].sort(), servers: [...servers].sort() });
}

type SealedValue = Pick<SnapshotValue, 'namespace' | 'name' | 'env' | 'kind' | 'version' | 'revision' | 'etag' | 'plaintext'>;

/** A ring as sealed: its members' plaintexts end to end in one buffer (current first), the lengths in its metadata. */
export interface SealedRing {
  readonly meta: RingMeta;
  readonly plaintext: Buffer;
}

interface RingMeta {
  readonly namespace: string;
  readonly name: string;
  readonly env: string;
  readonly kind: ItemKind;
  readonly revision: number;
  readonly etag: string;
  readonly version: number;
  readonly bytes: number;
  readonly previous: ReadonlyArray<{ readonly version: number; readonly retiredAt: Milliseconds; readonly expiresAt: Milliseconds; readonly bytes: number }>;
}

/** A staged rollout whose candidate this agent serves for an item (the fleet report's), as sealed: metadata only. */
export interface SealedMark {
  readonly mark: RolloutVersion;
  readonly plaintext: Buffer;
}

export function sealedMarkOf(mark: RolloutVersion): SealedMark {
  return { mark: { rollout: mark.rollout, item: mark.item, version: mark.version }, plaintext: Buffer.alloc(0) };
}

/** A record of the body: values first, then rings, then rollout marks. */
export type SealedRecord = SealedValue | SealedRing | SealedMark;

/** A held ring as one record; the held copies are zero-filled (the record's buffer is the one copy left). */
export function sealedRingOf(ring: HeldRing): SealedRing {
  const meta: RingMeta = {
    namespace: ring.namespace,
    name: ring.name,
    env: ring.env,
    kind: ring.kind,
    revision: ring.revision,
    etag: ring.currentEtag,
    version: ring.current.version,
    bytes: ring.current.plaintext.length,
    previous: ring.previous.map((p) => ({ version: p.version, retiredAt: p.retiredAt, expiresAt: p.expiresAt, bytes: p.plaintext.length })),
  };
  const plaintext = Buffer.concat([ring.current.plaintext, ...ring.previous.map((p) => p.plaintext)]);
  releaseRing(ring);
  return { meta, plaintext };
}

function metaOf(record: SealedRecord): string {
  if ('meta' in record) return JSON.stringify(record.meta);
  if ('mark' in record) return JSON.stringify(record.mark);
  const { namespace, name, env, kind, version, revision, etag } = record;
  return JSON.stringify({ namespace, name, env, kind, version, revision, etag });
}

function u32(n: number): Buffer {
  const out = Buffer.allocUnsafe(U32);
  out.writeUInt32BE(n, 0);
  return out;
}

/**
 * Seals a snapshot as a stream: `head()` first, `record()` for each value in
 * the order given to the constructor, `end()` last. The body is sized up
 * front for the header (metadata measured, not kept); plaintext is read only
 * when its record is sealed.
 */
export class SnapshotSealer {
  readonly #cipher: CipherGCM;
  readonly #head: Buffer;

  constructor(key: Buffer, fields: { scope: string; takenAt: Milliseconds; position: LogPosition }, values: readonly SealedValue[], rings: readonly SealedRing[] = [], marks: readonly SealedMark[] = []) {
    let bodyBytes = 0;
    for (const record of [...values, ...rings, ...marks]) bodyBytes += 2 * U32 + Buffer.byteLength(metaOf(record)) + record.plaintext.length;
    const header: SnapshotHeader = { v: FORMAT_VERSION, keyId: keyIdOf(key), scope: fields.scope, takenAt: fields.takenAt, position: fields.position, values: values.length, rings: rings.length, rollouts: marks.length, bodyBytes };
    const headerBytes = Buffer.from(JSON.stringify(header));
    const aad = Buffer.concat([MAGIC, u32(headerBytes.length), headerBytes]);
    const iv = randomBytes(IV_BYTES);
    this.#cipher = createCipheriv('aes-256-gcm', key, iv, { authTagLength: TAG_BYTES });
    this.#cipher.setAAD(aad);
    this.#head = Buffer.concat([aad, iv]);
  }

  head(): Buffer {
    return this.#head;
  }

  /** A record's framing and metadata (no value in them): what precedes its plaintext in the body. */
  frame(value: SealedRecord): Buffer {
    const meta = Buffer.from(metaOf(value));
    const frame = Buffer.allocUnsafe(2 * U32 + meta.length);
    frame.writeUInt32BE(meta.length, 0);
    meta.copy(frame, U32);
    frame.writeUInt32BE(value.plaintext.length, U32 + meta.length);
    return frame;
  }

  /** Seals the next bytes of the body (frames and plaintext, in record order). */
  update(body: Buffer): Buffer {
    return this.#cipher.update(body);
  }

  /** The ciphertext of the next value's record; the plaintext is only read, never copied. */
  record(value: SealedRecord): Buffer {
    return Buffer.concat([this.#cipher.update(this.frame(value)), this.#cipher.update(value.plaintext)]);
  }

  end(): Buffer {
    const tail = this.#cipher.final();
    return Buffer.concat([tail, this.#cipher.getAuthTag()]);
  }
}

/** Ciphertext gathered per chunk handed to the file. */
export const SEAL_CHUNK_BYTES = 64 * 1024;

/**
 * The sealed file as chunks of about SEAL_CHUNK_BYTES, sealing values only
 * when the chunk they fall in is asked for; `sealed(i)` runs once value i is
 * no longer read (the writer lets go of it there). Records are gathered in
 * one scratch buffer (zero-filled after each use) and sealed with one cipher
 * call per chunk: per call, not per byte, is what AES-GCM costs here (about
 * four times the cipher's own time with two calls per 1 KiB record).
 */
export function* sealedChunks(sealer: SnapshotSealer, values: readonly SealedRecord[], sealed: (index: number) => void = () => {}): Generator<Buffer> {
  yield sealer.head();
  const scratch = Buffer.allocUnsafeSlow(SEAL_CHUNK_BYTES);
  let used = 0;
  try {
    for (let i = 0; i < values.length; i++) {
      const value = values[i] as SealedRecord;
      const frame = sealer.frame(value);
      const size = frame.length + value.plaintext.length;
      if (used > 0 && used + size > scratch.length) {
        const out = sealer.update(scratch.subarray(0, used));
        scratch.fill(0, 0, used);
        used = 0;
        yield out;
      }
      if (size > scratch.length) {
        const out = Buffer.concat([sealer.update(frame), sealer.update(value.plaintext)]);
        sealed(i);
        yield out;
        continue;
      }
      frame.copy(scratch, used);
      value.plaintext.copy(scratch, used + frame.length);
      used += size;
      sealed(i);
    }
    const last = used > 0 ? sealer.update(scratch.subarray(0, used)) : Buffer.alloc(0);
    yield Buffer.concat([last, sealer.end()]);
  } finally {
    scratch.fill(0);
  }
}

/** Seals a whole snapshot in memory (tests and small callers). */
export function sealSnapshot(key: Buffer, fields: { scope: string; takenAt: Milliseconds; position: LogPosition }, values: readonly SnapshotValue[], rings: readonly SealedRing[] = [], marks: readonly SealedMark[] = []): Buffer {
  const sealer = new SnapshotSealer(key, fields, values, rings, marks);
  return Buffer.concat([sealer.head(), ...[...values, ...rings, ...marks].map((r) => sealer.record(r)), sealer.end()]);
}

function isPosition(value: unknown): value is LogPosition {
  const p = value as LogPosition | null;
  return typeof p === 'object' && p !== null && typeof p.storeId === 'string' && Number.isSafeInteger(p.revision) && p.revision >= 0 && typeof p.digest === 'string';
}

function parseHeader(bytes: Buffer): SnapshotHeader | undefined {
  let header: unknown;
  try {
    header = JSON.parse(bytes.toString('utf8'));
  } catch {
    return undefined;
  }
  const h = header as SnapshotHeader | null;
  if (typeof h !== 'object' || h === null || !OPENS.has(h.v)) return undefined;
  const count = (n: number | undefined, from: number): boolean => (h.v < from ? n === undefined : Number.isSafeInteger(n) && (n ?? -1) >= 0);
  if (!count(h.rings, 2) || !count(h.rollouts, 3)) return undefined;
  if (typeof h.keyId !== 'string' || typeof h.scope !== 'string' || !Number.isFinite(h.takenAt) || !isPosition(h.position)) return undefined;
  if (!Number.isSafeInteger(h.values) || h.values < 0 || !Number.isSafeInteger(h.bodyBytes) || h.bodyBytes < 0) return undefined;
  return h;
}

const KINDS: ReadonlySet<string> = new Set<ItemKind>(['config', 'secret']);

interface Parsed {
  readonly values: SnapshotValue[];
  readonly rings: SnapshotRing[];
  readonly rollouts: RolloutVersion[];
}

const isTime = (n: unknown): n is number => typeof n === 'number' && Number.isFinite(n);

/** A ring's metadata checked, and its plaintext split into members (copies the caller owns); undefined if they disagree. */
function ringOf(m: RingMeta, plaintext: Buffer): SnapshotRing | undefined {
  if (typeof m.namespace !== 'string' || typeof m.name !== 'string' || typeof m.env !== 'string' || !KINDS.has(m.kind) || !Number.isSafeInteger(m.version) || !Number.isSafeInteger(m.revision) || typeof m.etag !== 'string') return undefined;
  if (!Number.isSafeInteger(m.bytes) || m.bytes < 0 || !Array.isArray(m.previous)) return undefined;
  let total = m.bytes;
  for (const p of m.previous) {
    if (typeof p !== 'object' || p === null || !Number.isSafeInteger(p.version) || !isTime(p.retiredAt) || !isTime(p.expiresAt) || !Number.isSafeInteger(p.bytes) || p.bytes < 0) return undefined;
    total += p.bytes;
  }
  if (total !== plaintext.length) return undefined;
  let at = m.bytes;
  const previous = m.previous.map((p) => {
    const member = { version: p.version, retiredAt: p.retiredAt, expiresAt: p.expiresAt, plaintext: Buffer.from(plaintext.subarray(at, at + p.bytes)) };
    at += p.bytes;
    return member;
  });
  return { namespace: m.namespace, name: m.name, env: m.env, kind: m.kind, revision: m.revision, currentEtag: m.etag, current: { version: m.version, plaintext: Buffer.from(plaintext.subarray(0, m.bytes)) }, previous };
}

/** Splits an authenticated body into values and rings (each plaintext a copy the caller owns); undefined if it does not parse. */
function parseBody(body: Buffer, count: number, ringCount: number, markCount: number): Parsed | undefined {
  const parsed: Parsed = { values: [], rings: [], rollouts: [] };
  let at = 0;
  const take = (n: number): Buffer | undefined => {
    if (at + n > body.length) return undefined;
    const out = body.subarray(at, at + n);
    at += n;
    return out;
  };
  const record = (): { meta: unknown; plaintext: Buffer } | undefined => {
    const metaLen = take(U32)?.readUInt32BE(0);
    const meta = metaLen === undefined ? undefined : take(metaLen);
    const valueLen = meta === undefined ? undefined : take(U32)?.readUInt32BE(0);
    const plaintext = valueLen === undefined ? undefined : take(valueLen);
    if (!meta || !plaintext) return undefined;
    try {
      return { meta: JSON.parse(meta.toString('utf8')) as unknown, plaintext };
    } catch {
      return undefined;
    }
  };
  for (let i = 0; i < count; i++) {
    const r = record();
    const m = r?.meta as Omit<SnapshotValue, 'plaintext'> | null | undefined;
    if (!r || typeof m !== 'object' || m === null) return discard(parsed);
    if (typeof m.namespace !== 'string' || typeof m.name !== 'string' || typeof m.env !== 'string' || !KINDS.has(m.kind) || !Number.isSafeInteger(m.version) || !Number.isSafeInteger(m.revision) || typeof m.etag !== 'string') {
      return discard(parsed);
    }
    parsed.values.push({ namespace: m.namespace, name: m.name, env: m.env, kind: m.kind, version: m.version, revision: m.revision, etag: m.etag, plaintext: Buffer.from(r.plaintext) });
  }
  for (let i = 0; i < ringCount; i++) {
    const r = record();
    const ring = r && typeof r.meta === 'object' && r.meta !== null ? ringOf(r.meta as RingMeta, r.plaintext) : undefined;
    if (!ring) return discard(parsed);
    parsed.rings.push(ring);
  }
  for (let i = 0; i < markCount; i++) {
    const m = record()?.meta as RolloutVersion | null | undefined;
    if (typeof m !== 'object' || m === null || typeof m.rollout !== 'string' || typeof m.item !== 'string' || !Number.isSafeInteger(m.version)) return discard(parsed);
    parsed.rollouts.push({ rollout: m.rollout, item: m.item, version: m.version });
  }
  return at === body.length ? parsed : discard(parsed);
}

function discard(parsed: Parsed): undefined {
  for (const value of parsed.values) zeroize(value.plaintext);
  parsed.rings.forEach(releaseRing);
  return undefined;
}

/**
 * Opens a snapshot file: refused (with the reason) when it is torn, not a
 * snapshot, sealed with another key, made for another configuration, or
 * fails authentication. No byte of the body is used before the tag checks.
 */
export function openSnapshot(file: Buffer, key: Buffer, scope: string): OpenedSnapshot {
  if (file.length < MAGIC.length + U32) return { ok: false, reason: 'truncated', detail: `${file.length} bytes, shorter than a snapshot's header` };
  if (!file.subarray(0, MAGIC.length).equals(MAGIC)) return { ok: false, reason: 'format', detail: 'not a config-sidecar snapshot (or another format version)' };
  const headerLen = file.readUInt32BE(MAGIC.length);
  const headerEnd = MAGIC.length + U32 + headerLen;
  if (file.length < headerEnd + IV_BYTES) return { ok: false, reason: 'truncated', detail: 'the file ends inside its header' };
  const header = parseHeader(file.subarray(MAGIC.length + U32, headerEnd));
  if (!header) return { ok: false, reason: 'tampered', detail: 'the header does not parse' };
  if (header.keyId !== keyIdOf(key)) return { ok: false, reason: 'foreign-key', detail: `sealed with another key (key id ${header.keyId}, this agent's is ${keyIdOf(key)})` };
  if (header.scope !== scope) return { ok: false, reason: 'foreign-scope', detail: `made for another configuration (${header.scope}, this agent serves ${scope})` };
  const expected = headerEnd + IV_BYTES + header.bodyBytes + TAG_BYTES;
  if (file.length < expected) return { ok: false, reason: 'truncated', detail: `${file.length} of ${expected} bytes` };
  if (file.length > expected) return { ok: false, reason: 'tampered', detail: `${file.length - expected} byte(s) after the tag` };
  const decipher = createDecipheriv('aes-256-gcm', key, file.subarray(headerEnd, headerEnd + IV_BYTES), { authTagLength: TAG_BYTES });
  decipher.setAAD(file.subarray(0, headerEnd));
  decipher.setAuthTag(file.subarray(expected - TAG_BYTES));
  // update() hands out plaintext before final() checks the tag: nothing is parsed until it has.
  const body = decipher.update(file.subarray(headerEnd + IV_BYTES, expected - TAG_BYTES));
  try {
    decipher.final();
  } catch {
    zeroize(body);
    return { ok: false, reason: 'tampered', detail: 'authentication failed (GCM tag)' };
  }
  const parsed = parseBody(body, header.values, header.rings ?? 0, header.rollouts ?? 0);
  zeroize(body);
  if (!parsed) return { ok: false, reason: 'tampered', detail: 'the body does not parse' };
  return { ok: true, header, values: parsed.values, rings: parsed.rings, rollouts: parsed.rollouts };
}
