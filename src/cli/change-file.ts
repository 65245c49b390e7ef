/**
 * Reads a change file for `put --from-file` into a POST /v1/changes body.
 * YAML (or JSON) with `changes:`; an entry's `valueFile` (relative to the
 * change file) is read here, so a secret need not be written into the YAML:
 * a secret's bytes become `value` (UTF-8) or `valueBase64`, a config file is
 * parsed as JSON. Everything else is checked by the server, which names the
 * bad entry (`changes.N...`).
 */
import { readFileSync } from 'node:fs';
import { isUtf8 } from 'node:buffer';
import { dirname, resolve } from 'node:path';
import { parse } from 'yaml';
import { CliError, EXIT } from './cli-util.ts';

const SETTING = '--from-file';

function read(path: string, what: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new CliError(`cannot read ${what} "${path}" (${(err as NodeJS.ErrnoException).code ?? 'error'})`, EXIT.usage);
  }
}

export function readChangeFile(file: string): { changes: unknown[] } {
  let doc: unknown;
  try {
    doc = parse(read(file, SETTING).toString('utf8'));
  } catch (err) {
    if (err instanceof CliError) throw err;
    throw new CliError(`${SETTING} "${file}" is not valid YAML: ${(err as Error).message.split('\n')[0]}`, EXIT.usage);
  }
  const changes = (doc as { changes?: unknown } | null)?.changes;
  if (!Array.isArray(changes) || changes.length === 0) {
    throw new CliError(`${SETTING} "${file}" needs a non-empty "changes:" list, e.g. changes: [{ item: ns/name, kind: config, value: 1 }]`, EXIT.usage);
  }
  const base = dirname(resolve(file));
  return {
    changes: changes.map((entry: unknown, index) => {
      if (typeof entry !== 'object' || entry === null || !('valueFile' in entry)) return entry;
      const { valueFile, ...rest } = entry as { valueFile: unknown; kind?: unknown };
      if (typeof valueFile !== 'string') throw new CliError(`changes.${index}.valueFile must be a path`, EXIT.usage);
      const bytes = read(resolve(base, valueFile), `changes.${index}.valueFile`);
      try {
        if (rest.kind === 'secret') return isUtf8(bytes) ? { ...rest, value: bytes.toString('utf8') } : { ...rest, valueBase64: bytes.toString('base64') };
        try {
          return { ...rest, value: JSON.parse(bytes.toString('utf8')) as unknown };
        } catch {
          throw new CliError(`changes.${index}.valueFile "${valueFile}" is not JSON (a config value); for a secret set kind: secret`, EXIT.usage);
        }
      } finally {
        bytes.fill(0);
      }
    }),
  };
}
