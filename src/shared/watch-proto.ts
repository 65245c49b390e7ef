/**
 * Loads `watch.proto` at run time with @grpc/proto-loader (no generated code to
 * keep in sync) and converts between wire messages and the plain typed events
 * the server and agent use. uint64 revisions travel as strings on the wire
 * (`longs: String`) and become numbers here; they stay below 2^53.
 */
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

export const WATCH_PROTO_PATH = fileURLToPath(new URL('./proto/configsidecar/v1/watch.proto', import.meta.url));
export const WATCH_SERVICE_NAME = 'configsidecar.v1.WatchService';

/**
 * A point in one store's log (v1.1). `digest` is the hex digest of the event at
 * `revision` ('' for revision 0); `storeId` changes on restore or reset.
 */
export interface LogPosition {
  readonly storeId: string;
  readonly revision: number;
  readonly digest: string;
}

/**
 * Where a stream starts. `now` and `after` are v1.1; `legacy` is a v1.0 client
 * that sent only since_revision (> 0; a v1.0 0 decodes as `now`).
 */
export type StartFrom =
  | { readonly kind: 'now' }
  | { readonly kind: 'after'; readonly position: LogPosition }
  | { readonly kind: 'legacy'; readonly sinceRevision: number };

/**
 * A watch request after validation. `start` is what the server acts on; a
 * request built without it (a v1.0 caller) starts from `sinceRevision`
 * (0 = now). `sinceRevision` is the revision of `start` where it has one.
 */
export interface WatchRequest {
  readonly prefixes: readonly string[];
  readonly sinceRevision: number;
  readonly start?: StartFrom;
  readonly agentId: string;
}

/** One sealed environment layer carried inline in a change event (base64 fields, as GET /v1/envelopes). */
export interface InlineLayer {
  readonly env: string;
  readonly version: number;
  readonly revision: number;
  readonly keyId: string;
  readonly keyVersion: number;
  readonly iv: string;
  readonly ciphertext: string;
  readonly tag: string;
  /** The AAD layout (`valueAad`); absent means 1. */
  readonly aadVersion?: number;
}

/**
 * `layers` is the item's complete set of current live layers when the server
 * sent them inline, undefined when the agent must refetch. `setRevision` is the
 * last revision of the change set the event belongs to (undefined: none).
 */
interface ItemEventExtras {
  readonly layers?: readonly InlineLayer[];
  readonly setRevision?: number;
}

export type WatchEventBody =
  | ({ readonly type: 'itemChanged'; readonly namespace: string; readonly name: string; readonly kind: string; readonly version: number; readonly env: string } & ItemEventExtras)
  | ({ readonly type: 'itemDeleted'; readonly namespace: string; readonly name: string; readonly env: string; readonly version: number } & ItemEventExtras)
  | { readonly type: 'keyRotated'; readonly namespace: string; readonly keyVersion: number }
  | {
      readonly type: 'heartbeat';
      readonly currentRevision: number;
      readonly intervalMs: number;
      /** '' or absent from a v1.0 server. */
      readonly storeId?: string;
      readonly environments?: readonly string[];
    }
  | {
      readonly type: 'resyncRequired';
      readonly oldestRevision: number;
      readonly currentRevision: number;
      readonly reason: string;
      readonly storeId?: string;
      readonly environments?: readonly string[];
    };

/** `digest`: hex digest of the event at `revision` ('' when unknown or 0). */
export type WatchEvent = WatchEventBody & { readonly revision: number; readonly digest?: string };

interface WireLayer {
  env?: string;
  version?: string;
  revision?: string;
  keyId?: string;
  keyVersion?: string;
  iv?: Buffer;
  ciphertext?: Buffer;
  tag?: Buffer;
  aadVersion?: number;
}

interface WireItemExtras {
  layers?: WireLayer[];
  layersInline?: boolean;
  setRevision?: string;
}

/** Wire shape produced by proto-loader with the options below. */
interface WireEvent {
  revision?: string;
  event?: string;
  digest?: Buffer;
  itemChanged?: { namespace?: string; name?: string; kind?: string; version?: string; env?: string } & WireItemExtras;
  itemDeleted?: { namespace?: string; name?: string; env?: string; version?: string } & WireItemExtras;
  keyRotated?: { namespace?: string; keyVersion?: string };
  heartbeat?: { currentRevision?: string; intervalMs?: number; storeId?: string; environments?: string[] };
  resyncRequired?: { oldestRevision?: string; currentRevision?: string; reason?: string; storeId?: string; environments?: string[] };
}

interface WirePosition {
  storeId?: string;
  revision?: string;
  digest?: Buffer;
}

interface WireRequest {
  prefixes?: string[];
  sinceRevision?: string;
  agentId?: string;
  start?: { start?: string; now?: object; after?: WirePosition } | null;
}

const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: false,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
};

let cached: grpc.ServiceDefinition | undefined;

/** The WatchService definition, loaded once per process. */
export function watchServiceDefinition(): grpc.ServiceDefinition {
  if (!cached) {
    const definition = protoLoader.loadSync(WATCH_PROTO_PATH, LOADER_OPTIONS);
    const pkg = grpc.loadPackageDefinition(definition) as unknown as {
      configsidecar: { v1: { WatchService: grpc.ServiceClientConstructor } };
    };
    cached = pkg.configsidecar.v1.WatchService.service;
  }
  return cached;
}

/** A client constructor for WatchService. */
export function watchClientConstructor(): grpc.ServiceClientConstructor {
  return grpc.makeClientConstructor(watchServiceDefinition(), WATCH_SERVICE_NAME);
}

const num = (value: string | number | undefined): number => Number(value ?? 0);

const hex = (bytes: Buffer | undefined): string => (bytes && bytes.length > 0 ? Buffer.from(bytes).toString('hex') : '');
const unhex = (digest: string): Buffer => Buffer.from(digest, 'hex');

function startFromWire(wire: WireRequest): StartFrom {
  if (wire.start?.start === 'now') return { kind: 'now' };
  if (wire.start?.start === 'after') {
    const p = wire.start.after ?? {};
    return { kind: 'after', position: { storeId: p.storeId ?? '', revision: num(p.revision), digest: hex(p.digest) } };
  }
  const since = num(wire.sinceRevision);
  return since === 0 ? { kind: 'now' } : { kind: 'legacy', sinceRevision: since };
}

export function watchRequestFromWire(wire: WireRequest): WatchRequest {
  const start = startFromWire(wire);
  const sinceRevision = start.kind === 'after' ? start.position.revision : start.kind === 'legacy' ? start.sinceRevision : 0;
  return { prefixes: wire.prefixes ?? [], sinceRevision, start, agentId: wire.agentId ?? '' };
}

export function watchRequestToWire(request: WatchRequest): WireRequest {
  const base = { prefixes: [...request.prefixes], agentId: request.agentId };
  const start: StartFrom = request.start ?? (request.sinceRevision > 0 ? { kind: 'legacy', sinceRevision: request.sinceRevision } : { kind: 'now' });
  switch (start.kind) {
    case 'now':
      return { ...base, sinceRevision: '0', start: { now: {} } };
    case 'after':
      // since_revision too, so a v1.0 server still resumes (without the store and digest checks).
      return {
        ...base,
        sinceRevision: String(start.position.revision),
        start: { after: { storeId: start.position.storeId, revision: String(start.position.revision), digest: unhex(start.position.digest) } },
      };
    case 'legacy':
      return { ...base, sinceRevision: String(start.sinceRevision) };
  }
}

function layersToWire(layers: readonly InlineLayer[] | undefined): WireItemExtras {
  if (!layers) return {};
  return {
    layersInline: true,
    layers: layers.map((l) => ({
      env: l.env,
      version: String(l.version),
      revision: String(l.revision),
      keyId: l.keyId,
      keyVersion: String(l.keyVersion),
      iv: Buffer.from(l.iv, 'base64'),
      ciphertext: Buffer.from(l.ciphertext, 'base64'),
      tag: Buffer.from(l.tag, 'base64'),
      ...(l.aadVersion === undefined ? {} : { aadVersion: l.aadVersion }),
    })),
  };
}

function extrasFromWire(wire: WireItemExtras): ItemEventExtras {
  const setRevision = num(wire.setRevision);
  const layers = wire.layersInline
    ? (wire.layers ?? []).map((l) => ({
        env: l.env ?? '',
        version: num(l.version),
        revision: num(l.revision),
        keyId: l.keyId ?? '',
        keyVersion: num(l.keyVersion),
        iv: Buffer.from(l.iv ?? []).toString('base64'),
        ciphertext: Buffer.from(l.ciphertext ?? []).toString('base64'),
        tag: Buffer.from(l.tag ?? []).toString('base64'),
        ...(l.aadVersion ? { aadVersion: l.aadVersion } : {}),
      }))
    : undefined;
  return { ...(layers ? { layers } : {}), ...(setRevision > 0 ? { setRevision } : {}) };
}

const setRevisionToWire = (setRevision: number | undefined): { setRevision?: string } =>
  setRevision ? { setRevision: String(setRevision) } : {};

/** Wire message for an event; the server serialises each event once per fan-out. */
export function watchEventToWire(event: WatchEvent): WireEvent {
  const revision = String(event.revision);
  const digest = unhex(event.digest ?? '');
  switch (event.type) {
    case 'itemChanged':
      return {
        revision,
        digest,
        itemChanged: {
          namespace: event.namespace,
          name: event.name,
          kind: event.kind,
          version: String(event.version),
          env: event.env,
          ...layersToWire(event.layers),
          ...setRevisionToWire(event.setRevision),
        },
      };
    case 'itemDeleted':
      return {
        revision,
        digest,
        itemDeleted: {
          namespace: event.namespace,
          name: event.name,
          env: event.env,
          version: String(event.version),
          ...layersToWire(event.layers),
          ...setRevisionToWire(event.setRevision),
        },
      };
    case 'keyRotated':
      return { revision, digest, keyRotated: { namespace: event.namespace, keyVersion: String(event.keyVersion) } };
    case 'heartbeat':
      return {
        revision,
        digest,
        heartbeat: {
          currentRevision: String(event.currentRevision),
          intervalMs: event.intervalMs,
          storeId: event.storeId ?? '',
          environments: [...(event.environments ?? [])],
        },
      };
    case 'resyncRequired':
      return {
        revision,
        digest,
        resyncRequired: {
          oldestRevision: String(event.oldestRevision),
          currentRevision: String(event.currentRevision),
          reason: event.reason,
          storeId: event.storeId ?? '',
          environments: [...(event.environments ?? [])],
        },
      };
  }
}

/** Converts a received message; returns undefined for an event kind this version does not know. */
export function watchEventFromWire(wire: WireEvent): WatchEvent | undefined {
  const revision = num(wire.revision);
  const digestHex = hex(wire.digest);
  // Absent fields stay absent, so a v1.0 server's events decode as before.
  const digest = digestHex ? { digest: digestHex } : {};
  switch (wire.event) {
    case 'itemChanged': {
      const e = wire.itemChanged ?? {};
      return {
        revision,
        ...digest,
        type: 'itemChanged',
        namespace: e.namespace ?? '',
        name: e.name ?? '',
        kind: e.kind ?? '',
        version: num(e.version),
        env: e.env ?? '',
        ...extrasFromWire(e),
      };
    }
    case 'itemDeleted': {
      const e = wire.itemDeleted ?? {};
      return {
        revision,
        ...digest,
        type: 'itemDeleted',
        namespace: e.namespace ?? '',
        name: e.name ?? '',
        env: e.env ?? '',
        version: num(e.version),
        ...extrasFromWire(e),
      };
    }
    case 'keyRotated': {
      const e = wire.keyRotated ?? {};
      return { revision, ...digest, type: 'keyRotated', namespace: e.namespace ?? '', keyVersion: num(e.keyVersion) };
    }
    case 'heartbeat': {
      const e = wire.heartbeat ?? {};
      return {
        revision,
        ...digest,
        type: 'heartbeat',
        currentRevision: num(e.currentRevision),
        intervalMs: e.intervalMs ?? 0,
        ...(e.storeId ? { storeId: e.storeId } : {}),
        ...(e.environments?.length ? { environments: e.environments } : {}),
      };
    }
    case 'resyncRequired': {
      const e = wire.resyncRequired ?? {};
      return {
        revision,
        ...digest,
        type: 'resyncRequired',
        oldestRevision: num(e.oldestRevision),
        currentRevision: num(e.currentRevision),
        reason: e.reason ?? '',
        ...(e.storeId ? { storeId: e.storeId } : {}),
        ...(e.environments?.length ? { environments: e.environments } : {}),
      };
    }
    default:
      return undefined;
  }
}
