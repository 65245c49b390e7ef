/**
 * The injector's and webhook's default settings, with no imports so the CLI
 * can show them in `--help` without loading the webhook.
 */
export const DEFAULT_SIDECAR_IMAGE = 'ghcr.io/config-sidecar/config-sidecar:0.1.0';
export const DEFAULT_AGENT_SERVER = 'https://config-sidecar-server.config-sidecar.svc:8420';
export const DEFAULT_AGENT_SERVER_GRPC = 'config-sidecar-server.config-sidecar.svc:8421';
export const DEFAULT_AGENT_SERVER_CA_CONFIG_MAP = 'config-sidecar-ca';
export const DEFAULT_TOKEN_AUDIENCE = 'config-sidecar';
/** The kubelet refreshes a projected token at 80% of its life; 10m is the API server's minimum. */
export const DEFAULT_TOKEN_EXPIRATION = '10m';
/** The agent image's user and group (distroless "nonroot"); also the fsGroup set on pods that have none. */
export const SIDECAR_UID = 65532;
export const DEFAULT_SHARED_GROUP = 65532;
export const DEFAULT_WEBHOOK_LISTEN = '0.0.0.0:8443';
export const DEFAULT_WEBHOOK_TLS_CERT = '/etc/config-sidecar/tls/tls.crt';
export const DEFAULT_WEBHOOK_TLS_KEY = '/etc/config-sidecar/tls/tls.key';
/** The API server caps objects near 1.5 MiB; an AdmissionReview carries the object once or twice. */
export const DEFAULT_WEBHOOK_MAX_BODY = '4MiB';
