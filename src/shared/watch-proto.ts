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

/** A watch request after validation. */
export interface WatchRequest {
  readonly prefixes: readonly string[];
  readonly sinceRevision: number;
  readonly agentId: string;
}

export type WatchEventBody =
  | { readonly type: 'itemChanged'; readonly namespace: string; readonly name: string; readonly kind: string; readonly version: number; readonly env: string }
  | { readonly type: 'itemDeleted'; readonly namespace: string; readonly name: string; readonly env: string; readonly version: number }
  | { readonly type: 'keyRotated'; readonly namespace: string; readonly keyVersion: number }
  | { readonly type: 'heartbeat'; readonly currentRevision: number; readonly intervalMs: number }
  | { readonly type: 'resyncRequired'; readonly oldestRevision: number; readonly currentRevision: number; readonly reason: string };

export type WatchEvent = WatchEventBody & { readonly revision: number };

/** Wire shape produced by proto-loader with the options below. */
interface WireEvent {
  revision?: string;
  event?: string;
  itemChanged?: { namespace?: string; name?: string; kind?: string; version?: string; env?: string };
  itemDeleted?: { namespace?: string; name?: string; env?: string; version?: string };
  keyRotated?: { namespace?: string; keyVersion?: string };
  heartbeat?: { currentRevision?: string; intervalMs?: number };
  resyncRequired?: { oldestRevision?: string; currentRevision?: string; reason?: string };
}

interface WireRequest {
  prefixes?: string[];
  sinceRevision?: string;
  agentId?: string;
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

export function watchRequestFromWire(wire: WireRequest): WatchRequest {
  return {
    prefixes: wire.prefixes ?? [],
    sinceRevision: num(wire.sinceRevision),
    agentId: wire.agentId ?? '',
  };
}

export function watchRequestToWire(request: WatchRequest): WireRequest {
  return { prefixes: [...request.prefixes], sinceRevision: String(request.sinceRevision), agentId: request.agentId };
}

/** Wire message for an event; the server serialises each event once per fan-out. */
export function watchEventToWire(event: WatchEvent): WireEvent {
  const revision = String(event.revision);
  switch (event.type) {
    case 'itemChanged':
      return { revision, itemChanged: { namespace: event.namespace, name: event.name, kind: event.kind, version: String(event.version), env: event.env } };
    case 'itemDeleted':
      return { revision, itemDeleted: { namespace: event.namespace, name: event.name, env: event.env, version: String(event.version) } };
    case 'keyRotated':
      return { revision, keyRotated: { namespace: event.namespace, keyVersion: String(event.keyVersion) } };
    case 'heartbeat':
      return { revision, heartbeat: { currentRevision: String(event.currentRevision), intervalMs: event.intervalMs } };
    case 'resyncRequired':
      return {
        revision,
        resyncRequired: { oldestRevision: String(event.oldestRevision), currentRevision: String(event.currentRevision), reason: event.reason },
      };
  }
}

/** Converts a received message; returns undefined for an event kind this version does not know. */
export function watchEventFromWire(wire: WireEvent): WatchEvent | undefined {
  const revision = num(wire.revision);
  switch (wire.event) {
    case 'itemChanged': {
      const e = wire.itemChanged ?? {};
      return { revision, type: 'itemChanged', namespace: e.namespace ?? '', name: e.name ?? '', kind: e.kind ?? '', version: num(e.version), env: e.env ?? '' };
    }
    case 'itemDeleted': {
      const e = wire.itemDeleted ?? {};
      return { revision, type: 'itemDeleted', namespace: e.namespace ?? '', name: e.name ?? '', env: e.env ?? '', version: num(e.version) };
    }
    case 'keyRotated': {
      const e = wire.keyRotated ?? {};
      return { revision, type: 'keyRotated', namespace: e.namespace ?? '', keyVersion: num(e.keyVersion) };
    }
    case 'heartbeat': {
      const e = wire.heartbeat ?? {};
      return { revision, type: 'heartbeat', currentRevision: num(e.currentRevision), intervalMs: e.intervalMs ?? 0 };
    }
    case 'resyncRequired': {
      const e = wire.resyncRequired ?? {};
      return {
        revision,
        type: 'resyncRequired',
        oldestRevision: num(e.oldestRevision),
        currentRevision: num(e.currentRevision),
        reason: e.reason ?? '',
      };
    }
    default:
      return undefined;
  }
}
