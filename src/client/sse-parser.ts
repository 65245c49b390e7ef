/**
 * Server-Sent Events framing for `/v1/watch`: blocks split on a blank line,
 * `event:` / `id:` / `data:` fields, comment lines ignored (the agent's
 * keep-alives and its opening line).
 */

/** One parsed block; undefined fields were absent. */
export interface SseBlock {
  readonly event: string;
  readonly id: string;
  readonly data: string;
}

/** Parses one block (without its terminating blank line); a comment-only block gives undefined. */
export function parseSseBlock(block: string): SseBlock | undefined {
  let event = '';
  let id = '';
  let data = '';
  let any = false;
  for (const line of block.split(/\r?\n/)) {
    if (line === '' || line.startsWith(':')) continue;
    const cut = line.indexOf(':');
    const field = cut === -1 ? line : line.slice(0, cut);
    const value = cut === -1 ? '' : line.slice(cut + 1).replace(/^ /, '');
    if (field === 'event') event = value;
    else if (field === 'id') id = value;
    else if (field === 'data') data += any && data !== '' ? `\n${value}` : value;
    else continue;
    any = true;
  }
  return any ? { event, id, data } : undefined;
}

/** Splits a growing text buffer into complete blocks and the unfinished rest. */
export function takeBlocks(buffer: string): { blocks: string[]; rest: string } {
  const normalized = buffer.replace(/\r\n/g, '\n');
  const parts = normalized.split('\n\n');
  const rest = parts.pop() ?? '';
  return { blocks: parts, rest };
}
