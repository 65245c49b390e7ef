/**
 * `AdmissionReview` v1 in, answer out: a pure function of the parsed body and
 * the injector settings, separate from the HTTPS listener. A body we cannot
 * answer as a review (wrong version, no request uid) is an HTTP 400; every
 * review we can answer gets `allowed`, a JSONPatch when injecting, or
 * `allowed: false` with a status message saying what to fix.
 */
import { z } from 'zod';
import { AppError, describeError } from '../shared/errors.ts';
import { mutate, MutateError, type MutateResult } from './mutate.ts';
import { podSchema } from './pod.ts';
import type { InjectorSettings } from './settings.ts';

export const ADMISSION_API_VERSION = 'admission.k8s.io/v1';

const reviewSchema = z.looseObject({
  apiVersion: z.string(),
  kind: z.string(),
  request: z
    .looseObject({
      uid: z.string().min(1),
      kind: z.looseObject({ group: z.string(), version: z.string(), kind: z.string() }).optional(),
      namespace: z.string().optional(),
      name: z.string().optional(),
      operation: z.string().optional(),
      object: z.unknown().optional(),
    })
    .optional(),
});

export interface AdmissionResponse {
  readonly uid: string;
  readonly allowed: boolean;
  readonly patchType?: 'JSONPatch';
  readonly patch?: string;
  readonly status?: { readonly code: number; readonly message: string };
}

/** What the listener sends back, plus a log line's worth of facts (no pod content). */
export interface AdmissionAnswer {
  readonly review: { apiVersion: string; kind: 'AdmissionReview'; response: AdmissionResponse };
  readonly log: { readonly uid: string; readonly namespace: string; readonly outcome: string; readonly reason: string };
}

/** Answers one review; throws `AppError` (→ HTTP 400) only when the body is not a v1 review at all. */
export function answerReview(body: unknown, settings: InjectorSettings): AdmissionAnswer {
  const parsed = reviewSchema.safeParse(body);
  if (!parsed.success) {
    throw new AppError('bad_request', 'The body is not an AdmissionReview: expected an object with apiVersion, kind and request.');
  }
  const review = parsed.data;
  if (review.kind !== 'AdmissionReview' || review.apiVersion !== ADMISSION_API_VERSION) {
    throw new AppError(
      'bad_request',
      `Only ${ADMISSION_API_VERSION} AdmissionReview is supported, got ${review.apiVersion} ${review.kind}; set admissionReviewVersions: ["v1"].`,
    );
  }
  const request = review.request;
  if (!request) throw new AppError('bad_request', 'The AdmissionReview has no request (or no request.uid).');
  const namespace = request.namespace ?? '';
  const answer = (response: Omit<AdmissionResponse, 'uid'>, outcome: string, reason: string): AdmissionAnswer => ({
    review: { apiVersion: ADMISSION_API_VERSION, kind: 'AdmissionReview', response: { uid: request.uid, ...response } },
    log: { uid: request.uid, namespace, outcome, reason },
  });
  const deny = (code: number, message: string) => answer({ allowed: false, status: { code, message } }, 'denied', message);

  const kind = request.kind;
  if (!kind || kind.group !== '' || kind.kind !== 'Pod') {
    const got = kind ? `${kind.group ? `${kind.group}/` : ''}${kind.version} ${kind.kind}` : 'no kind';
    return deny(400, `config-sidecar injects Pods only, got ${got}; the MutatingWebhookConfiguration rules should match pods only`);
  }
  if (request.operation !== undefined && request.operation !== 'CREATE') {
    return answer({ allowed: true }, 'skipped', `operation ${request.operation} is not injected`);
  }
  if (request.object === undefined || request.object === null) return deny(400, 'the request has no object (the Pod to inject)');
  const pod = podSchema.safeParse(request.object);
  if (!pod.success) {
    const issue = pod.error.issues[0];
    return deny(400, `the Pod is invalid at ${issue?.path.join('.') || '(root)'}: ${issue?.message}`);
  }

  let result: MutateResult;
  try {
    result = mutate(pod.data, { settings });
  } catch (err) {
    if (err instanceof MutateError) return deny(400, err.message);
    return deny(500, `injection failed unexpectedly: ${describeError(err)}`);
  }
  if (result.outcome !== 'patched') return answer({ allowed: true }, result.outcome, result.reason);
  return answer(
    { allowed: true, patchType: 'JSONPatch', patch: Buffer.from(JSON.stringify(result.patch)).toString('base64') },
    'patched',
    result.reason,
  );
}
