/**
 * What a running process compiled, read through its inspector (`--inspect`
 * in NODE_OPTIONS): `Debugger.enable` lists every script the process has
 * parsed, its own modules (file: URLs) and node's built-in ones
 * (`node:internal/…`), so a test can say what an agent loaded without
 * anything in the agent being there for the test.
 */
import assert from 'node:assert/strict';

/** Every script URL a process compiled, read through its inspector at `wsUrl`. */
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

/** The inspector URL of the process image that printed last (the re-executed one prints again). */
export function lastInspectorUrl(output: string): string {
  const urls = [...output.matchAll(/Debugger listening on (ws:\/\/\S+)/g)].map((m) => m[1] as string);
  assert.ok(urls.length > 0, `no inspector URL in: ${output.slice(0, 500)}`);
  return urls.at(-1) as string;
}

/** The npm packages among `scripts`' URLs. */
export const packagesOf = (scripts: readonly string[]): Set<string> =>
  new Set(scripts.flatMap((url) => /\/node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(url)?.[1] ?? []));
