/**
 * What a running process has loaded, read from outside through its inspector
 * (start it with `NODE_OPTIONS=--inspect=127.0.0.1:0`): `Debugger.enable`
 * replays a `scriptParsed` event for every script the process compiled, so a
 * test can say which packages the agent's serving process holds without any
 * hook in the agent. The bin's re-exec keeps NODE_OPTIONS, so each process
 * image prints its own "Debugger listening" line; the last is the live one.
 */
import assert from 'node:assert/strict';

/** The inspector URL of the process image that printed last. */
export function lastInspectorUrl(output: string): string {
  const urls = [...output.matchAll(/Debugger listening on (ws:\/\/\S+)/g)].map((m) => m[1] as string);
  assert.ok(urls.length > 0, `no inspector URL in: ${output.slice(0, 500)}`);
  return urls.at(-1) as string;
}

/** How many process images opened an inspector (the bin's re-exec makes it two). */
export const inspectorImages = (output: string): number => [...output.matchAll(/Debugger listening on/g)].length;

/** Every script URL the process at `wsUrl` compiled. */
export async function loadedScripts(wsUrl: string): Promise<string[]> {
  const ws = new WebSocket(wsUrl);
  const scripts: string[] = [];
  try {
    await new Promise((resolve, reject) => {
      ws.addEventListener('open', resolve, { once: true });
      ws.addEventListener('error', reject, { once: true });
    });
    const enabled = new Promise<void>((resolve) =>
      ws.addEventListener('message', (event) => {
        const message = JSON.parse(String(event.data)) as { id?: number; method?: string; params?: { url?: string } };
        if (message.method === 'Debugger.scriptParsed' && message.params?.url) scripts.push(message.params.url);
        if (message.id === 1) resolve();
      }),
    );
    ws.send(JSON.stringify({ id: 1, method: 'Debugger.enable' }));
    await enabled;
  } finally {
    ws.close();
  }
  return scripts;
}

/** The npm packages (`zod`, `@grpc/grpc-js`) among script URLs. */
export const packagesOf = (scripts: readonly string[]): Set<string> =>
  new Set(scripts.flatMap((url) => /\/node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(url)?.[1] ?? []));

/** The packages loaded by the live image of the process whose output is `output`. */
export async function loadedPackages(output: string): Promise<Set<string>> {
  return packagesOf(await loadedScripts(lastInspectorUrl(output)));
}
