/**
 * Every item under a namespace prefix, for the commands that need the whole
 * list: GET /v1/list answers a page at a time (the server's default page
 * size), so this follows `nextCursor` until the last page. A cursor that does
 * not advance is the server's bug, not a reason to loop forever.
 */
import { CliError, EXIT } from './cli-util.ts';
import { call, type ServerFlags } from './server-client.ts';

export interface ListedItem {
  readonly namespace: string;
  readonly name: string;
  readonly kind: string;
  readonly version: number;
  readonly revision: number;
  readonly envs: readonly string[];
}

export async function listAllItems(flags: ServerFlags, prefix: string): Promise<ListedItem[]> {
  const path = `/v1/list/${prefix.split('/').filter(Boolean).map(encodeURIComponent).join('/')}`;
  const items: ListedItem[] = [];
  let cursor: string | undefined;
  for (;;) {
    const page = (await call(flags, 'GET', cursor === undefined ? path : `${path}?cursor=${encodeURIComponent(cursor)}`)) as { items?: ListedItem[]; nextCursor?: string };
    items.push(...(page.items ?? []));
    if (page.nextCursor === undefined) return items;
    if (page.nextCursor === cursor) throw new CliError(`the server answered the same list cursor twice for ${path}; listed ${items.length} items so far`, EXIT.failed);
    cursor = page.nextCursor;
  }
}
