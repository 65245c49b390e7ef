/**
 * The operator status page (/ui/) against a real server and real agents:
 * its headers and asset table over raw HTTP, and the page itself in Debian's
 * Chromium driven by playwright-core — the fleet, items' convergence, key
 * ages, a rolling rollout and its abort button, and markup from an agent's
 * side (its token's subject name; a canary's application health reason)
 * shown as text; an agent whose reports stopped shown silent, not connected.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { join } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import type { KeysResponse } from '../src/shared/protocol.ts';
import { SILENT_AFTER_MS } from '../src/server/fleet/report-silence.ts';
import { socketGet, startAgentProcess, type AgentProcess } from './helpers/agent-process.ts';
import { passFleetTime } from './helpers/fleet-time.ts';
import { http, makeTempDir, removeDir, startServerProcess, type ServerProcess } from './helpers/server-process.ts';

const CHROMIUM = '/usr/bin/chromium';
const NO_CHROMIUM = existsSync(CHROMIUM) ? false : `Chromium is not installed at ${CHROMIUM} (Debian: apt-get install chromium; .ci/run does)`;
/** A static-token subject name is free text: it reaches the page as an agent's subject. */
const MARKUP_SUBJECT = '<img src=x onerror="window.__pwned=1">ops<b>bold</b>';
const MARKUP_TOKEN = 'markup-subject-token-0123456789abcdef';
/** A canary's health reason (at most 200 printable characters) carrying markup. */
const MARKUP_REASON = '<img src=x onerror="window.__pwned=2"><script>window.__pwned=3</script>db down';
const VIEWER_TOKEN = 'viewer-token-0123456789abcdef';
/** An operator's usual role: list and agents:read on its namespaces only (not every namespace). */
const OPERATOR_TOKEN = 'operator-token-0123456789abcdef';
const PAGE_WAIT_MS = 15_000;
const sha = (t: string) => createHash('sha256').update(t).digest('hex');

/** The little of the browser the page functions below touch (the test's lib has no DOM). */
interface PageElement {
  readonly textContent: string | null;
  readonly classList: { contains(name: string): boolean };
  querySelector(selector: string): PageElement | null;
}
/** A node a page function builds or appends. */
type PageNode = object;
interface PageContainer extends PageElement {
  append(...nodes: PageNode[]): void;
  readonly textContent: string | null;
  querySelectorAll(selector: string): ArrayLike<PageElement> & Iterable<PageElement & { click(): void }>;
}
declare const document: {
  querySelector(selector: string): PageElement | null;
  querySelectorAll(selector: string): { readonly length: number };
  createElement(tag: string): PageContainer;
};
declare const window: Record<string, unknown>;
declare const sessionStorage: { readonly length: number };

let server: ServerProcess;
let dir: string;
const agents: AgentProcess[] = [];

before(async () => {
  dir = await makeTempDir('cs-ui-');
  const authFile = join(dir, 'auth.yaml');
  await writeFile(
    authFile,
    `version: 1
subjects:
  - name: ${JSON.stringify(MARKUP_SUBJECT)}
    tokens:
      - sha256: ${sha(MARKUP_TOKEN)}
  - name: viewer
    tokens:
      - sha256: ${sha(VIEWER_TOKEN)}
  - name: operator
    tokens:
      - sha256: ${sha(OPERATOR_TOKEN)}
roles:
  - name: team-a-reader
    rules:
      - prefixes: [team-a]
        actions: [read]
  - name: fleet-viewer
    rules:
      - prefixes: [team-a]
        actions: [agents:read]
  - name: team-a-operator
    rules:
      - prefixes: [team-a]
        actions: [list, agents:read]
bindings:
  - role: team-a-operator
    subjects: [operator]
  - role: team-a-reader
    subjects: [${JSON.stringify(MARKUP_SUBJECT)}]
  - role: fleet-viewer
    subjects: [viewer]
`,
  );
  server = await startServerProcess({ args: ['--auth-file', authFile, '--rate-limit', '0'] });
});

after(async () => {
  for (const a of agents) await a.stop('SIGKILL');
  await server.stop('SIGKILL');
  await removeDir(server.dataDir);
  await removeDir(dir);
});

const header = (res: { headers: Record<string, string | string[] | undefined> }, name: string): string => String(res.headers[name] ?? '');

test('/ui/ serves the page and its modules without a token, with a strict CSP, nosniff and exact content types; unknown or traversing paths are 404', async () => {
  const page = await http(server.httpUrl, 'GET', '/ui/');
  assert.equal(page.status, 200, page.text);
  assert.equal(header(page, 'content-type'), 'text/html; charset=utf-8');
  assert.match(header(page, 'content-security-policy'), /^default-src 'self'; frame-ancestors 'none'/);
  assert.equal(header(page, 'x-content-type-options'), 'nosniff');
  assert.match(page.text, /<script type="module" src="app\.js"><\/script>/);
  // No inline script or style: the CSP forbids them, so the page must not need them.
  assert.doesNotMatch(page.text, /<script>|<style|style="|onclick=/);

  const script = await http(server.httpUrl, 'GET', '/ui/app.js');
  assert.equal(script.status, 200);
  assert.equal(header(script, 'content-type'), 'text/javascript; charset=utf-8');
  const css = await http(server.httpUrl, 'GET', '/ui/style.css');
  assert.equal(header(css, 'content-type'), 'text/css; charset=utf-8');
  const again = await http(server.httpUrl, 'GET', '/ui/app.js', { headers: { 'if-none-match': header(script, 'etag') } });
  assert.equal(again.status, 304);

  const head = await http(server.httpUrl, 'HEAD', '/ui/views.js');
  assert.equal(head.status, 200);
  assert.equal(header(head, 'content-type'), 'text/javascript; charset=utf-8');
  assert.equal(head.text, '');

  const bare = await http(server.httpUrl, 'GET', '/ui');
  assert.equal(bare.status, 308);
  assert.equal(header(bare, 'location'), '/ui/');

  for (const path of ['/ui/nope.js', '/ui/../v1/agents', '/ui/%2e%2e/openapi.json', '/ui/..%2fv1%2fagents', '/ui//etc/passwd', '/ui/dom.js/']) {
    const res = await http(server.httpUrl, 'GET', path, { token: server.rootToken });
    assert.equal(res.status, 404, `${path}: ${res.text}`);
    assert.equal(res.json.error.code, 'not_found', path);
    assert.equal(header(res, 'x-content-type-options'), 'nosniff');
  }
  const post = await http(server.httpUrl, 'POST', '/ui/', { body: {} });
  assert.equal(post.status, 405);
});

test('API answers are no-store and nosniff, errors included; GET /v1/keys lists key ages (no key material) to callers who may list', async () => {
  const put = await http(server.httpUrl, 'PUT', '/v1/items/team-a/keyed', { token: server.rootToken, body: { kind: 'secret', value: 's3cr3t-value' } });
  assert.equal(put.status, 200, put.text);
  assert.equal((await http(server.httpUrl, 'PUT', '/v1/items/team-b/other', { token: server.rootToken, body: { kind: 'config', value: 1 } })).status, 200);
  const keys = await http(server.httpUrl, 'GET', '/v1/keys', { token: server.rootToken });
  assert.equal(keys.status, 200, keys.text);
  assert.equal(header(keys, 'cache-control'), 'no-store');
  assert.equal(header(keys, 'x-content-type-options'), 'nosniff');
  const body = keys.json as KeysResponse;
  assert.deepEqual(body.keys.map((k) => k.namespace), ['team-a', 'team-b']);
  const teamA = body.keys.find((k) => k.namespace === 'team-a');
  assert.ok(teamA, keys.text);
  assert.deepEqual(Object.keys(teamA).sort(), ['ageSeconds', 'createdAt', 'namespace', 'rotationDueAt', 'version']);
  assert.equal(teamA.version, 1);
  assert.ok(teamA.ageSeconds >= 0 && teamA.ageSeconds < 600);
  // The default --key-max-age is 90 days.
  assert.equal(Date.parse(teamA.rotationDueAt) - Date.parse(teamA.createdAt), 90 * 24 * 3600 * 1000);

  // An operator listing team-a only sees team-a's key, though it may not list every namespace.
  assert.equal((await http(server.httpUrl, 'GET', '/v1/list/', { token: OPERATOR_TOKEN })).status, 403);
  const own = await http(server.httpUrl, 'GET', '/v1/keys', { token: OPERATOR_TOKEN });
  assert.deepEqual((own.json as KeysResponse).keys.map((k) => k.namespace), ['team-a']);
  const denied = await http(server.httpUrl, 'GET', '/v1/keys', { token: VIEWER_TOKEN });
  assert.equal(denied.status, 403, denied.text);
  assert.match(denied.json.error.message, /grant the list action/);
  const anonymous = await http(server.httpUrl, 'GET', '/v1/agents');
  assert.equal(anonymous.status, 401);
  assert.equal(header(anonymous, 'cache-control'), 'no-store');
  assert.equal(header(anonymous, 'x-content-type-options'), 'nosniff');
});

/** Waits until `fn` (run in the page, polled) holds, within PAGE_WAIT_MS; a timeout shows what the page showed. */
async function until(page: Page, what: string, fn: (arg: string) => boolean, arg = ''): Promise<void> {
  try {
    await page.waitForFunction(fn, arg, { timeout: PAGE_WAIT_MS });
  } catch (err) {
    const text = await page.locator('body').innerText().catch(() => '(no page)');
    throw new Error(`${what}: not within ${PAGE_WAIT_MS} ms (${(err as Error).message.split('\n')[0]}); page shows:\n${text}`);
  }
}

test('in Chromium: a token entered once shows the fleet, items converged, key ages and a rolling rollout; abort works; markup from agents is text', { skip: NO_CHROMIUM }, async (t) => {
  agents.push(await startAgentProcess(server, { prefixes: ['team-a'], args: ['--agent-id', 'ui-agent-1'] }));
  agents.push(await startAgentProcess(server, { prefixes: ['team-a'], args: ['--agent-id', 'ui-agent-2'], upstreamToken: MARKUP_TOKEN }));
  const put = await http(server.httpUrl, 'PUT', '/v1/items/team-a/app', { token: server.rootToken, body: { kind: 'config', value: { color: 'blue' } } });
  assert.equal(put.status, 200, put.text);
  // The application in each pod reads it: what an agent holds is what a rollout changes for it.
  for (const agent of agents) assert.equal((await socketGet(agent.socketPath, '/v1/items/team-a/app')).status, 200);

  const browser: Browser = await chromium.launch({ executablePath: CHROMIUM, args: process.getuid?.() === 0 ? ['--no-sandbox'] : [] });
  t.after(() => browser.close());
  const context = await browser.newContext();
  const page = await context.newPage();
  const problems: string[] = [];
  page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
  page.on('console', (msg) => {
    if (msg.type() === 'error' && !/status of 40[34]/.test(msg.text())) problems.push(`console: ${msg.text()}`);
  });
  const unauthenticatedApiCalls: string[] = [];
  page.on('request', (req) => {
    if (new URL(req.url()).pathname.startsWith('/v1/') && !req.headers().authorization?.startsWith('Bearer ')) unauthenticatedApiCalls.push(req.url());
  });

  await page.goto(`${server.httpUrl}/ui/`);
  await page.fill('#token', server.rootToken);
  await page.click('#login button[type=submit]');

  // The fleet: both real agents, caught up, with the markup subject as literal text.
  await until(page, 'both agents listed with lag 0', () => document.querySelectorAll('#fleet-panel tr[data-agent]').length === 2);
  const rows = page.locator('#fleet-panel tbody tr');
  assert.deepEqual((await rows.evaluateAll((trs) => trs.map((tr) => tr.getAttribute('data-agent')))).sort(), ['ui-agent-1', 'ui-agent-2']);
  const markupRow = page.locator('#fleet-panel tr[data-agent="ui-agent-2"]');
  assert.equal(await markupRow.locator('td').nth(1).textContent(), MARKUP_SUBJECT);
  assert.equal(await markupRow.locator('td').nth(2).textContent(), 'ok');
  assert.equal(await page.locator('img, b, main script').count(), 0, 'markup from the API became elements');
  assert.equal(await page.evaluate(() => window.__pwned), undefined);

  // Items: team-a/app is applied by both agents covering team-a (they report within a moment).
  await until(page, 'team-a/app converged on 2 of 2 agents', () => document.querySelector('#items-panel tr[data-item="team-a/app"]')?.textContent?.includes('2/2') === true);
  // Key ages: the namespace's data key, never a value.
  await until(page, 'the team-a key age listed', () => /team-a\s*1\s*\d+ s/.test(document.querySelector('#keys-panel')?.textContent ?? ''));
  const shown = await page.locator('body').innerText();
  assert.doesNotMatch(shown, /s3cr3t-value|blue/);
  assert.doesNotMatch(shown, /\b(null|undefined|NaN|\[object Object\])\b/, 'no placeholder leaked into the page');

  // The token lives in this tab's sessionStorage: a reload needs no second entry.
  await page.reload();
  await until(page, 'the fleet shown again after a reload', () => document.querySelectorAll('#fleet-panel tr[data-agent]').length === 2);
  assert.equal(await page.isHidden('#login'), true);

  await rolloutPart(page);

  assert.deepEqual(unauthenticatedApiCalls, [], 'every API call the page made carried the bearer token');
  assert.deepEqual(problems, []);

  // Forgetting the token returns to the prompt and removes it from storage.
  await page.click('#forget-token');
  assert.equal(await page.isVisible('#login'), true);
  assert.equal(await page.evaluate(() => sessionStorage.length), 0);

  // An operator who may list team-a only (not every namespace) still sees its items, listed per namespace.
  await page.fill('#token', OPERATOR_TOKEN);
  await page.click('#login button[type=submit]');
  await until(page, 'the operator sees team-a/app converged', () => document.querySelector('#items-panel tr[data-item="team-a/app"]')?.textContent?.includes('2/2') === true);
  assert.equal(await page.locator('#fleet-panel tr[data-agent]').count(), 2);
});

async function rolloutPart(page: Page): Promise<void> {
  const start = await http(server.httpUrl, 'POST', '/v1/rollouts', {
    token: server.rootToken,
    body: { changes: [{ item: 'team-a/app', kind: 'config', value: { color: 'green' } }], steps: [50, 100], bakeSeconds: 3600, maxUnhealthy: 1 },
  });
  assert.ok(start.status === 200 || start.status === 201, start.text);
  const id = start.json.id as string;
  // 50% of the two agents covering team-a: one canary, listed as soon as the rollout exists.
  const created = await http(server.httpUrl, 'GET', `/v1/rollouts/${id}`, { token: server.rootToken });
  assert.equal(created.json.state, 'rolling', created.text);
  assert.equal(created.json.canary.length, 1, created.text);
  const canaryId = created.json.canary[0] as string;
  const canary = agents[Number(/^ui-agent-([12])$/.exec(canaryId)?.[1]) - 1];
  assert.ok(canary, `the canary ${canaryId} is one of the test's agents`);
  await until(
    page,
    `rollout ${id} shown rolling at step 1 of 2 (50%) with canary ${canaryId}`,
    (expected) => {
      const [rid, cid] = expected.split(' ');
      const card = document.querySelector(`article[data-rollout="${rid}"]`);
      // Each canary with its health levels (issue 17's "files published" among them when it renders files).
      const levels = card?.querySelector(`.canary li[data-agent="${cid}"] .levels`)?.textContent ?? '';
      return card?.classList.contains('rolling') === true && /^connected, applied\b/.test(levels) && /^1 of 2: 50%/.test(card.querySelector('.step')?.textContent ?? '');
    },
    `${id} ${canaryId}`,
  );

  // Only health after the canary applied the candidate counts (the agent resets the signal then):
  // wait until the fleet shows the canary serving the rollout.
  await until(
    page,
    `the canary ${canaryId} shown serving rollout ${id}`,
    (expected) => {
      const [cid, rid] = expected.split(' ');
      return document.querySelector(`#fleet-panel tr[data-agent="${cid}"]`)?.textContent?.includes(`${rid}: team-a/app`) === true;
    },
    `${canaryId} ${id}`,
  );
  // The canary's application reports itself unhealthy through its agent, with markup in the reason;
  // one unhealthy canary is within maxUnhealthy, so the rollout keeps rolling and the page lists it.
  const health = await socketPost(canary.socketPath, '/v1/health', { healthy: false, reason: MARKUP_REASON });
  assert.ok(health.status >= 200 && health.status < 300, `POST /v1/health: ${health.status} ${health.body}`);
  await until(
    page,
    `the canary's reason shown as text on rollout ${id}`,
    (expected) => {
      const [rid, reason] = expected.split('\n');
      // The server words it ("application unhealthy: <the application's reason>").
      return reason !== undefined && document.querySelector(`article[data-rollout="${rid}"] .unhealthy .reason`)?.textContent?.endsWith(reason) === true;
    },
    `${id}\n${MARKUP_REASON}`,
  );
  // The fleet shows the application's signal beside the agent, reason as text too.
  await until(
    page,
    `the canary ${canaryId} shown unhealthy in the fleet`,
    (expected) => {
      const [cid, reason] = expected.split('\n');
      return document.querySelector(`#fleet-panel tr[data-agent="${cid}"] .reason`)?.textContent === reason;
    },
    `${canaryId}\n${MARKUP_REASON}`,
  );
  assert.equal(await page.locator('img, b, main script').count(), 0, 'a health reason became elements');
  assert.equal(await page.evaluate(() => window.__pwned), undefined);

  // The item shows which rollout holds it.
  assert.equal(await page.locator('#items-panel tr[data-item="team-a/app"] .rollout').textContent(), `rolling ${id} at 50%`);
  const card = page.locator(`article[data-rollout="${id}"]`);
  assert.deepEqual(await card.locator('button').allTextContents(), ['Promote', 'Pause', 'Abort']);
  page.once('dialog', (dialog) => void dialog.accept());
  await card.locator('button[data-action=abort]').click();
  await until(page, `rollout ${id} shown aborted`, (rid) => document.querySelector(`article[data-rollout="${rid}"]`)?.classList.contains('aborted') === true, id);
  assert.equal(await card.locator('button').count(), 0);
  assert.equal(await page.locator('#items-panel tr[data-item="team-a/app"] .rollout').count(), 0, 'an aborted rollout holds the item no more');
  const after = await http(server.httpUrl, 'GET', `/v1/rollouts/${id}`, { token: server.rootToken });
  assert.equal(after.json.state, 'aborted', after.text);
}

/** A JSON POST over an agent's Unix socket (what the application in the pod does). */
function socketPost(socketPath: string, path: string, body: unknown): Promise<{ status: number; body: string }> {
  const payload = JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = httpRequest({ socketPath, path, method: 'POST', headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) } }, (res) => {
      let text = '';
      res.setEncoding('utf8').on('data', (c: string) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
    });
    req.on('error', reject);
    req.end(payload);
  });
}

test('in Chromium, views.js alone: a rollout card shows step, canaries (a silent one as stream down) and a canary\'s markup reason as text, with the buttons its state allows; the fleet shows an application\'s reason as text', { skip: NO_CHROMIUM }, async (t) => {
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: process.getuid?.() === 0 ? ['--no-sandbox'] : [] });
  t.after(() => browser.close());
  const page = await browser.newPage();
  await page.goto(`${server.httpUrl}/ui/`);
  const now = new Date().toISOString();
  const base = { steps: [30, 100], items: ['team-a/app'], bakeSeconds: 300, maxUnhealthy: 1, createdAt: now, stepStartedAt: now };
  const views = [
    { ...base, id: 'r-rolling', state: 'rolling', step: 0, percent: 30, canary: ['web-1'], unhealthy: [{ agent: 'web-1', reason: MARKUP_SUBJECT }] },
    // A canary silent for three report intervals: its stream counts as down whatever it last reported.
    { ...base, id: 'r-paused', state: 'paused', step: 0, percent: 30, canary: ['web-1'], unhealthy: [], canaryStatus: [{ agent: 'web-1', reporting: true, lastReport: now, silent: true, connected: false, applied: true, files: 'none', appHealth: 'unknown' }] },
    { ...base, id: 'r-back', state: 'rolled_back', step: 0, percent: 30, canary: [], unhealthy: [], reason: `canary web-1 unhealthy: ${MARKUP_SUBJECT}` },
  ];
  // The module is loaded the way the page loads it (same origin, under the CSP); only its input is made up.
  const rendered = await page.evaluate(async (rollouts) => {
    const url = '/ui/views.js';
    const { rolloutsView } = (await import(url)) as { rolloutsView: (a: unknown, on: (id: string, action: string) => void) => PageNode[] };
    const clicks: string[] = [];
    const host = document.createElement('div');
    host.append(...rolloutsView({ rollouts }, (id, action) => clicks.push(`${id}:${action}`)));
    for (const button of host.querySelectorAll('button')) button.click();
    const card = (id: string) => host.querySelector(`article[data-rollout="${id}"]`);
    return {
      step: card('r-rolling')?.querySelector('.step')?.textContent,
      canary: card('r-rolling')?.querySelector('.canary')?.textContent,
      reason: card('r-rolling')?.querySelector('.unhealthy .reason')?.textContent,
      endReason: card('r-back')?.querySelector('dd.reason')?.textContent,
      silentLevels: card('r-paused')?.querySelector('li[data-agent="web-1"] .levels')?.textContent,
      elements: host.querySelectorAll('img, b, script').length,
      clicks,
    };
  }, views);
  assert.deepEqual(rendered, {
    step: '1 of 2: 30% ([30%] → 100%)',
    canary: 'web-1',
    reason: MARKUP_SUBJECT,
    endReason: `canary web-1 unhealthy: ${MARKUP_SUBJECT}`,
    silentLevels: `stream down (silent: no report since ${now}), applied, app health unknown`,
    elements: 0,
    clicks: ['r-rolling:promote', 'r-rolling:pause', 'r-rolling:abort', 'r-paused:resume', 'r-paused:promote', 'r-paused:abort'],
  });

  // Active ones first, then the newest ten finished, newest first, whatever order the server lists them in.
  const finished = Array.from({ length: 12 }, (_, i) => ({ ...views[2], id: `r-old-${i}`, createdAt: new Date(Date.parse(now) - (12 - i) * 60_000).toISOString() }));
  const order = await page.evaluate(async (rollouts) => {
    const url = '/ui/views.js';
    const { rolloutsView } = (await import(url)) as { rolloutsView: (a: unknown, on: () => void) => PageNode[] };
    const host = document.createElement('div');
    host.append(...rolloutsView({ rollouts }, () => undefined));
    return { ids: [...host.querySelectorAll('article')].map((a) => (a as unknown as { dataset: { rollout: string } }).dataset.rollout), text: host.textContent };
  }, [...finished, views[0]]);
  assert.deepEqual(order.ids, ['r-rolling', ...Array.from({ length: 10 }, (_, i) => `r-old-${11 - i}`)]);
  assert.match(order.text ?? '', /2 older finished rollouts not shown\./);

  const agent = { id: 'web-1', subject: 'ops', prefixes: ['team-a'], appliedRevision: 3, lag: 0, connected: true, lastSeen: now, health: 'ok', rollouts: [], appHealth: 'unhealthy', healthReason: MARKUP_REASON };
  const fleet = await page.evaluate(async (agents) => {
    const url = '/ui/views.js';
    const { fleetView } = (await import(url)) as { fleetView: (a: unknown) => PageNode[] };
    const host = document.createElement('div');
    host.append(...fleetView({ currentRevision: 3, agents }).filter((n) => n !== null));
    return { application: host.querySelector('tr[data-agent="web-1"] .reason')?.textContent, elements: host.querySelectorAll('img, b, script').length, text: host.textContent };
  }, [agent]);
  assert.equal(fleet.application, MARKUP_REASON);
  assert.equal(fleet.elements, 0);
  assert.match(fleet.text ?? '', /^1 agent, 1 connected/);

  // A listing with a next page (GET /v1/list answered nextCursor): the items panel says there are more.
  const items = await page.evaluate(async () => {
    const url = '/ui/views.js';
    const { itemsView } = (await import(url)) as { itemsView: (l: unknown, f: unknown) => PageNode[] };
    const host = document.createElement('div');
    const item = { namespace: 'team-a', name: 'x', kind: 'config', version: 1, revision: 1, envs: ['base'] };
    host.append(...itemsView({ items: [item], more: true }, undefined).filter((n) => n !== null));
    return host.textContent;
  });
  assert.match(items ?? '', /Showing the first 1; there are more \(config-sidecar list shows them all\)\./);
});

test('in Chromium: an agent that stops reporting shows silent in the fleet table, with its last report time and why, not connected', { skip: NO_CHROMIUM }, async (t) => {
  const quiet = await startAgentProcess(server, { prefixes: ['team-a'], args: ['--agent-id', 'ui-agent-quiet'] });
  agents.push(quiet);
  const browser: Browser = await chromium.launch({ executablePath: CHROMIUM, args: process.getuid?.() === 0 ? ['--no-sandbox'] : [] });
  t.after(() => browser.close());
  const page = await (await browser.newContext()).newPage();
  await page.goto(`${server.httpUrl}/ui/`);
  await page.fill('#token', server.rootToken);
  await page.click('#login button[type=submit]');
  const row = (id: string) => `#fleet-panel tr[data-agent="${id}"]`;
  await until(page, 'ui-agent-quiet listed connected', (sel) => document.querySelector(sel)?.querySelector('td:nth-child(5)')?.textContent === 'yes', row('ui-agent-quiet'));
  const lastSeen = await page.locator(row('ui-agent-quiet')).locator('td').nth(7).textContent();

  // Its pod is gone; the others keep reporting while three of its report intervals pass on the server's clock.
  await quiet.stop('SIGKILL');
  // The first test's two agents (ui-agent-1, ui-agent-2, in start order).
  const live = new Map(agents.slice(0, 2).map((a, i) => [`ui-agent-${i + 1}`, a] as const));
  await passFleetTime(server, live, SILENT_AFTER_MS + 1_000);

  await until(page, 'ui-agent-quiet shown silent', (sel) => document.querySelector(sel)?.querySelector('.silent') !== null, row('ui-agent-quiet'));
  const cells = await page.locator(row('ui-agent-quiet')).locator('td').allTextContents();
  assert.match(cells[4] ?? '', /^silent no report for 3\d s \(agents report every 10 s; silent after 30 s\)/);
  assert.equal(cells[7], lastSeen, 'its last report time stays shown');
  for (const id of live.keys()) assert.equal(await page.locator(row(id)).locator('td').nth(4).textContent(), 'yes', `${id} still reports`);
  assert.match((await page.locator('#fleet-panel .summary').textContent()) ?? '', new RegExp(`^${live.size + 1} agents, ${live.size} connected, 1 silent,`));
});
