/**
 * The `files:` entries of the agent config (DESIGN.md §6, issue 5) as the
 * serving process holds them: where a rendered file goes, which items feed
 * it, its format, an optional logic-less template, its mode and reload hook.
 * The entries are validated where every other setting is, by the schema in
 * `file-spec-schema.ts` (zod), in the bin's first image and in a reload's
 * short-lived validator process; the serving process receives the validated
 * specs as plain JSON (agent/settings-shape.ts checks their shape by hand),
 * so it never loads zod or the template parser for them (docs/FOOTPRINT-LOG.md, f28).
 * What only the real directory can tell is checked here, at load and at
 * every reload: `checkFilesDir` refuses a destination whose path walks
 * through a symlink out of `--files-dir`.
 * Every message names the entry (`files[2] (app/.env)`), so an operator can act.
 */
import { lstatSync, readlinkSync, realpathSync } from 'node:fs';
import { dirname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import type { ItemRef } from '../../shared/paths.ts';
import { SettingError } from '../../shared/settings.ts';
import type { ReloadHook } from './reload-hook.ts';

/** Where rendered files go unless `--files-dir` says otherwise. */
export const DEFAULT_FILES_DIR = '/config-sidecar/files';
/** Readable by the agent and the group it shares with the app containers, nobody else. */
export const DEFAULT_FILE_MODE = 0o440;
/** The formats a file can be rendered in; see docs/FILES.md for each rule. */
export const FILE_FORMATS = ['raw', 'json', 'yaml', 'env', 'properties', 'pem', 'jwks', 'pem-bundle'] as const;
export type FileFormat = (typeof FILE_FORMATS)[number];

/** One item feeding a file: its address, an optional environment overlay and the key it is nested under. */
export interface FileItem extends ItemRef {
  /** Environment overlay to read (`dev`, `staging`, `prod`); absent = the agent's `--env`. */
  readonly env?: string | undefined;
  /** The key this item's value is nested under (json/yaml/template) or prefixes (env/properties). Default: the item name. */
  readonly as: string;
}

export interface FileSpec {
  /** Destination relative to `--files-dir`, `/`-separated, normalised. */
  readonly path: string;
  readonly items: readonly FileItem[];
  readonly format: FileFormat;
  /** Mustache source; `{{x}}` is escaped for the format, `{{{x}}}` is inserted as is. */
  readonly template?: string | undefined;
  /** File permission bits (0–0777); the owner-read bit is required so the guard can compare. */
  readonly mode: number;
  /** Called after a publication that changed this file (reload-hook.ts); loopback only. */
  readonly onChange?: ReloadHook | undefined;
}

/** Label an entry for messages: `files[2] (app/.env)`. */
export function entryLabel(index: number, path: unknown): string {
  return typeof path === 'string' ? `files[${index}] (${path})` : `files[${index}]`;
}

function isInside(root: string, candidate: string): boolean {
  const rel = relative(root, candidate);
  return rel === '' || (!rel.startsWith(`..${sep}`) && rel !== '..' && !isAbsolute(rel));
}

/**
 * Refuses an entry whose destination, walked through the real `--files-dir`,
 * meets a symlink that resolves outside it (an operator's or an attacker's link
 * would make the writer publish outside the volume). Our own top-level links
 * (`name -> ..data/name`) resolve inside and pass. A missing directory is fine:
 * the writer creates it.
 */
export function checkFilesDir(specs: readonly FileSpec[], filesDir: string): void {
  let root: string;
  try {
    root = realpathSync(filesDir);
  } catch {
    return; // not created yet: nothing on disk can escape
  }
  specs.forEach((spec, index) => {
    let current = resolve(filesDir);
    for (const segment of spec.path.split('/')) {
      current = join(current, segment);
      let isLink = false;
      try {
        isLink = lstatSync(current).isSymbolicLink();
      } catch {
        return; // the rest does not exist yet
      }
      if (!isLink) continue;
      let target: string;
      try {
        target = realpathSync(current);
      } catch {
        // A dangling link: judge it by where it points.
        target = resolve(dirname(current), readlinkSync(current));
      }
      if (!isInside(root, target)) {
        throw new SettingError('files', `${entryLabel(index, spec.path)}: "${segment}" is a symlink that leaves --files-dir (${filesDir})`);
      }
    }
  });
}
