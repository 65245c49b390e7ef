/** PEM text recognition (RFC 7468), shared by the file formats and the ring formats. */
const PEM_BLOCK_RE = /-----BEGIN ([A-Z0-9][A-Z0-9 ]*)-----\r?\n([\s\S]*?)\r?\n?-----END ([A-Z0-9][A-Z0-9 ]*)-----/g;
const PEM_HEADER_RE = /^[A-Za-z0-9-]+: ?.*$/;
const BASE64_LINE_RE = /^[A-Za-z0-9+/]+={0,2}$/;

/** True when the text is one or more PEM blocks (RFC 7468, with RFC 1421 headers) and whitespace only. */
export function isPem(text: string): boolean {
  let last = 0;
  let blocks = 0;
  for (const match of text.matchAll(PEM_BLOCK_RE)) {
    if (text.slice(last, match.index).trim() !== '') return false;
    if (match[1] !== match[3]) return false;
    const lines = (match[2] as string).split(/\r?\n/);
    let i = 0;
    // Optional encapsulated headers (Proc-Type, DEK-Info) then a blank line.
    if (lines.some((l) => l.trim() === '')) {
      while (i < lines.length && PEM_HEADER_RE.test(lines[i] as string)) i++;
      if (lines[i]?.trim() !== '') return false;
      i++;
    }
    const body = lines.slice(i).map((l) => l.trim());
    if (body.length === 0 || !body.every((l) => BASE64_LINE_RE.test(l))) return false;
    if (Buffer.from(body.join(''), 'base64').length === 0) return false;
    last = match.index + match[0].length;
    blocks++;
  }
  return blocks > 0 && text.slice(last).trim() === '';
}
