/**
 * The per-read counters (cache hits, data API responses) are kept in plain
 * numbers on the hot path and reach Prometheus when scraped: every read is
 * counted once, across scrapes, per listener and status.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createAgentMetrics } from '../src/agent/agent-metrics.ts';

test('hits and responses counted between scrapes add up exactly, per listener and status', async () => {
  const metrics = createAgentMetrics({ entries: () => 0, bytes: () => 0 });
  const value = async (name: string, labels = ''): Promise<number> => {
    const text = await metrics.registry.metrics();
    const line = text.split('\n').find((l) => l.startsWith(`${name}${labels ? `{${labels}}` : ''} `));
    return line === undefined ? Number.NaN : Number(line.slice(line.lastIndexOf(' ') + 1));
  };
  for (let i = 0; i < 3; i++) {
    metrics.cacheObserver.hit();
    metrics.countResponse('socket', 200);
  }
  metrics.countResponse('tcp', 401);
  assert.equal(await value('config_sidecar_agent_cache_hits_total'), 3);
  assert.equal(await value('config_sidecar_agent_requests_total', 'listener="socket",status="200"'), 3);
  assert.equal(await value('config_sidecar_agent_requests_total', 'listener="tcp",status="401"'), 1);
  // A second scrape with nothing new changes nothing; later reads add to the totals.
  assert.equal(await value('config_sidecar_agent_cache_hits_total'), 3);
  metrics.cacheObserver.hit();
  metrics.countResponse('socket', 200);
  metrics.countResponse('socket', 304);
  assert.equal(await value('config_sidecar_agent_cache_hits_total'), 4);
  assert.equal(await value('config_sidecar_agent_requests_total', 'listener="socket",status="200"'), 4);
  assert.equal(await value('config_sidecar_agent_requests_total', 'listener="socket",status="304"'), 1);
  assert.equal(await value('config_sidecar_agent_requests_total', 'listener="tcp",status="401"'), 1);
});

test('responses keep the order they were first answered in the scrape, whatever their status', async () => {
  const metrics = createAgentMetrics({ entries: () => 0, bytes: () => 0 });
  metrics.countResponse('socket', 404);
  metrics.countResponse('socket', 200);
  metrics.countResponse('socket', 200);
  metrics.countResponse('tcp', 200);
  metrics.countResponse('socket', 304);
  const series = (text: string): string[] => text.split('\n').filter((line) => line.startsWith('config_sidecar_agent_requests_total{'));
  assert.deepEqual(series(await metrics.registry.metrics()), [
    'config_sidecar_agent_requests_total{listener="socket",status="404"} 1',
    'config_sidecar_agent_requests_total{listener="socket",status="200"} 2',
    'config_sidecar_agent_requests_total{listener="socket",status="304"} 1',
    'config_sidecar_agent_requests_total{listener="tcp",status="200"} 1',
  ]);
  metrics.countResponse('tcp', 200);
  assert.deepEqual(series(await metrics.registry.metrics()).at(-1), 'config_sidecar_agent_requests_total{listener="tcp",status="200"} 2');
});
