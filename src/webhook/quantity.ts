/**
 * Kubernetes resource quantities (`50m`, `0.2`, `64Mi`, `1G`) as far as the
 * injector needs them: validating an annotation and comparing a request with
 * its limit. Values are compared as plain numbers (cores, bytes); the
 * precision of a double is plenty for container sizes.
 */

const QUANTITY_RE = /^(\d+(?:\.\d+)?|\.\d+)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$/;

const SUFFIX_FACTORS: Readonly<Record<string, number>> = {
  '': 1,
  m: 1e-3,
  k: 1e3,
  M: 1e6,
  G: 1e9,
  T: 1e12,
  P: 1e15,
  E: 1e18,
  Ki: 1024,
  Mi: 1024 ** 2,
  Gi: 1024 ** 3,
  Ti: 1024 ** 4,
  Pi: 1024 ** 5,
  Ei: 1024 ** 6,
};

/** The value of a quantity in base units (cores or bytes), or undefined when it is not one. */
export function parseQuantity(text: string): number | undefined {
  const match = QUANTITY_RE.exec(text);
  if (!match) return undefined;
  const value = Number(match[1]) * (SUFFIX_FACTORS[match[2] ?? ''] as number);
  return Number.isFinite(value) ? value : undefined;
}
