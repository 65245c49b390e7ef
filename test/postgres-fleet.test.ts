/**
 * The fleet view on PostgreSQL replicas: a report taken by one replica is in
 * the shared table, so every replica answers GET /v1/agents the same, and a
 * report never takes a revision (no event, the revision counter unchanged).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as grpc from '@grpc/grpc-js';
import { GrpcStatus } from '../src/shared/errors.ts';
import { fleetClientConstructor, reportToWire } from '../src/shared/fleet-proto.ts';
import { http, type ServerProcess } from './helpers/server-process.ts';
import { replicaSet } from './helpers/postgres-replicas.ts';
import { findPostgresBin, startThrowawayPostgres, type ThrowawayPostgres } from './helpers/store-postgres.ts';

const SKIP = findPostgresBin() ? false : 'PostgreSQL is not installed (no initdb/pg_ctl found); install postgresql to run the fleet replica test';

function report(server: ServerProcess, token: string, agentId: string, appliedRevision: number): Promise<number> {
  const Client = fleetClientConstructor();
  const client = new Client(server.grpcAddress, grpc.credentials.createInsecure()) as unknown as grpc.Client & {
    Report(req: unknown, md: grpc.Metadata, cb: (err: grpc.ServiceError | null) => void): void;
  };
  const md = new grpc.Metadata();
  md.set('authorization', `Bearer ${token}`);
  const body = reportToWire({ agentId, prefixes: ['team-a'], appliedRevision, storeId: '', connected: true, health: 'ok', rollouts: [] });
  return new Promise((resolve) => {
    client.Report(body, md, (err) => {
      client.close();
      resolve(err ? err.code : GrpcStatus.OK);
    });
  });
}

describe('PostgreSQL: the fleet view is shared by replicas', { skip: SKIP }, () => {
  let cluster: ThrowawayPostgres;
  before(async () => {
    cluster = await startThrowawayPostgres();
  });
  after(() => cluster?.stop());

  test('reports taken by either replica are listed alike by both; reports create no events', async (t) => {
    const url = await cluster.createDatabase();
    const set = replicaSet(t, url);
    const [a, b] = await Promise.all([set.start(), set.start()]);
    const write = await http(a.httpUrl, 'PUT', '/v1/items/team-a/app/flag', { token: set.rootToken, body: { kind: 'config', value: 1 } });
    assert.equal(write.status, 200, write.text);
    const revision = write.json.revision as number;
    assert.equal(await report(a, set.rootToken, 'pod-1', revision), GrpcStatus.OK);
    assert.equal(await report(b, set.rootToken, 'pod-2', revision - 1), GrpcStatus.OK);
    const views = await Promise.all([a, b].map(async (server) => {
      const res = await http(server.httpUrl, 'GET', '/v1/agents', { token: set.rootToken });
      assert.equal(res.status, 200, res.text);
      return (res.json.agents as Array<{ id: string; appliedRevision: number; lag: number }>).map(({ id, appliedRevision, lag }) => ({ id, appliedRevision, lag }));
    }));
    assert.deepEqual(views[0], [
      { id: 'pod-1', appliedRevision: revision, lag: 0 },
      { id: 'pod-2', appliedRevision: revision - 1, lag: 1 },
    ]);
    assert.deepEqual(views[1], views[0], 'both replicas give the same answer');
    const rows = await cluster.query(url, 'SELECT revision FROM revision_counter');
    assert.equal(Number(rows[0]?.revision), revision, 'reports took no revision');
  });
});
