/**
 * The operator status page at /ui/: plain ES modules, CSS and one HTML file
 * from src/server/ui (copied into dist by the build), read into memory once at
 * start. A request names an asset by its file name and only names in that
 * table are served, so no request path ever reaches the filesystem (no
 * traversal to guard). The page and its assets need no token; the API calls
 * the page makes carry one.
 */
import { createHash } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { extname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { AppError } from '../../shared/errors.ts';

/** Where the page's files are, next to this module in src/ and in dist/. */
export const STATUS_PAGE_DIR = new URL('../ui/', import.meta.url);
export const STATUS_PAGE_PATH = '/ui/';

const CONTENT_TYPES: Readonly<Record<string, string>> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
};

/**
 * Scripts and styles from this origin only (no inline code, so injected markup
 * cannot run), API calls to this origin only, never framed.
 */
export const STATUS_PAGE_CSP = "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'; object-src 'none'";

const PAGE_HEADERS: Readonly<Record<string, string>> = {
  'content-security-policy': STATUS_PAGE_CSP,
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
  'cross-origin-opener-policy': 'same-origin',
  'cross-origin-resource-policy': 'same-origin',
  // Small files: revalidate every load (by etag) so an upgraded server never runs an old script.
  'cache-control': 'no-cache',
};

interface Asset {
  readonly body: Buffer;
  readonly contentType: string;
  readonly etag: string;
}

/** The page's files by name (`index.html`, `app.js`, ...). */
export type StatusPage = ReadonlyMap<string, Asset>;

export interface StatusPageResult {
  readonly status: number;
  readonly headers: Readonly<Record<string, string>>;
  readonly raw?: Buffer;
}

/** Reads every file of the page; a file of a type the page cannot serve is a packaging mistake, refused at start. */
export async function loadStatusPage(dir: URL = STATUS_PAGE_DIR): Promise<StatusPage> {
  const path = fileURLToPath(dir);
  const page = new Map<string, Asset>();
  for (const entry of await readdir(path, { withFileTypes: true })) {
    if (!entry.isFile()) continue;
    const contentType = CONTENT_TYPES[extname(entry.name)];
    if (!contentType) throw new Error(`${path}${entry.name}: the status page serves only ${Object.keys(CONTENT_TYPES).join(' ')} files`);
    const body = await readFile(new URL(entry.name, dir));
    page.set(entry.name, { body, contentType, etag: `"${createHash('sha256').update(body).digest('base64url').slice(0, 22)}"` });
  }
  if (!page.has('index.html')) throw new Error(`${path}index.html is missing: the status page cannot be served`);
  return page;
}

/**
 * GET or HEAD /ui/<asset>: `asset` is the path after `/ui/` ('' for the page
 * itself), undefined for `/ui` without its slash (redirected, so the page's
 * relative URLs resolve under /ui/).
 */
export function statusPageResult(page: StatusPage, method: string, asset: string | undefined, ifNoneMatch?: string): StatusPageResult {
  if (method !== 'GET' && method !== 'HEAD') throw new AppError('method_not_allowed', `Use GET for ${STATUS_PAGE_PATH}.`);
  if (asset === undefined) return { status: 308, headers: { ...PAGE_HEADERS, location: STATUS_PAGE_PATH } };
  const found = page.get(asset === '' ? 'index.html' : asset);
  if (!found) throw new AppError('not_found', `The status page has no file ${JSON.stringify(asset.slice(0, 100))}; open ${STATUS_PAGE_PATH}.`);
  const headers = { ...PAGE_HEADERS, 'content-type': found.contentType, etag: found.etag };
  if (ifNoneMatch === found.etag) return { status: 304, headers };
  return { status: 200, headers, raw: found.body };
}
