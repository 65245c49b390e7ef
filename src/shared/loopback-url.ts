/**
 * The one rule for URLs a sidecar probes inside its own pod (the agent's
 * --app-health-url, the webhook's config-sidecar.io/app-health-url): http(s)
 * to a loopback host, without credentials, so a probe can never be pointed
 * at another host (SSRF).
 */

/** Undefined for a loopback http(s) URL; otherwise what is wrong with it, for the setting's error. */
export function loopbackUrlProblem(url: string): string | undefined {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return 'give an absolute URL such as http://127.0.0.1:8080/healthz';
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') return 'use http:// or https://';
  if (!['127.0.0.1', 'localhost', '[::1]'].includes(parsed.hostname)) return 'the agent probes loopback only (127.0.0.1, localhost or [::1]): the application in its own pod';
  if (parsed.username || parsed.password) return 'leave credentials out of the URL';
  return undefined;
}

