/**
 * The page's only way to the server: same-origin fetches of the REST API,
 * each carrying the bearer token the operator entered once, kept in this
 * tab's sessionStorage (gone when the tab closes; never in a cookie, so no
 * other site can make the browser send it).
 */

const TOKEN_KEY = 'config-sidecar.token';

export const token = {
  get: () => sessionStorage.getItem(TOKEN_KEY),
  set: (value) => sessionStorage.setItem(TOKEN_KEY, value),
  clear: () => sessionStorage.removeItem(TOKEN_KEY),
};

/** An API refusal: the server's `{ error: { code, message } }`, or what went wrong on the way. */
export class ApiError extends Error {
  /**
   * @param {number} status HTTP status, 0 when the server did not answer
   * @param {string} code
   * @param {string} message
   */
  constructor(status, code, message) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
  }
}

/**
 * @param {'GET' | 'POST'} method
 * @param {string} path an API path, e.g. `/v1/agents`
 * @returns {Promise<any>} the JSON body
 */
export async function api(method, path) {
  const bearer = token.get();
  if (!bearer) throw new ApiError(401, 'unauthenticated', 'No token entered.');
  let res;
  try {
    res = await fetch(path, {
      method,
      headers: { authorization: `Bearer ${bearer}`, accept: 'application/json' },
      cache: 'no-store',
      credentials: 'omit',
      redirect: 'error',
    });
  } catch (err) {
    throw new ApiError(0, 'unreachable', `The server did not answer ${method} ${path}: ${err instanceof Error ? err.message : String(err)}.`);
  }
  const text = await res.text();
  let body;
  try {
    body = text === '' ? undefined : JSON.parse(text);
  } catch {
    body = undefined;
  }
  if (!res.ok) {
    const error = body && typeof body === 'object' ? body.error : undefined;
    throw new ApiError(res.status, String(error?.code ?? `http_${res.status}`), String(error?.message ?? `${method} ${path} answered ${res.status}.`));
  }
  return body;
}
