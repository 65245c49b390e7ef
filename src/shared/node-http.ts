/**
 * node:http's functions, taken from the CommonJS module rather than through
 * an ESM import. An ESM import of a built-in module builds the module's
 * namespace by reading every export, and three of node:http's are lazy
 * getters (`WebSocket`, `CloseEvent`, `MessageEvent`) that load node's
 * bundled undici (fetch, WebSocket, web streams) and compile it: 12.6 MiB
 * more VmRSS in a bare process (5.8 anonymous, 6.8 of the node binary's
 * pages), paid by every agent for nothing it uses (docs/FOOTPRINT-LOG.md,
 * "Footprint", "The node binary's pages, attributed"). `process.getBuiltinModule`
 * returns the exports object and reads only what is named here. Types still
 * come from `import type … from 'node:http'`; the lint config refuses a value
 * import of node:http elsewhere in src/.
 */
export const { createServer, request, STATUS_CODES } = process.getBuiltinModule('node:http');
