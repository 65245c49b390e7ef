/**
 * What an agent id looks like, apart from fleet-proto.ts (grpc-js and the
 * proto loader), so the agent's settings schema can check `--agent-id`
 * without loading gRPC: the `--config` reload's validator child loads only
 * what validation needs (agent/config-validator.ts).
 */

/** An agent id: a pod name (DNS-1123) or a hostname, a little more liberal. */
export const AGENT_ID_RE = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,252}$/;
