/**
 * The slice of the Kubernetes Pod shape the injector reads, validated at the
 * edge with zod. Objects are loose: every field the injector does not know is
 * kept as it is, so a patch never drops what the user wrote.
 */
import { z } from 'zod';

const envVar = z.looseObject({ name: z.string() });
const volumeMount = z.looseObject({ name: z.string(), mountPath: z.string() });
const containerPort = z.looseObject({ containerPort: z.number(), name: z.string().optional() });

export const containerSchema = z.looseObject({
  name: z.string().min(1, 'every container needs a name'),
  env: z.array(envVar).optional(),
  volumeMounts: z.array(volumeMount).optional(),
  ports: z.array(containerPort).optional(),
  restartPolicy: z.string().optional(),
});
export type Container = z.infer<typeof containerSchema>;

export const podSpecSchema = z.looseObject({
  containers: z.array(containerSchema).min(1, 'a pod needs at least one container'),
  initContainers: z.array(containerSchema).optional(),
  volumes: z.array(z.looseObject({ name: z.string() })).optional(),
  securityContext: z.looseObject({ fsGroup: z.number().int().optional(), fsGroupChangePolicy: z.string().optional() }).optional(),
  hostNetwork: z.boolean().optional(),
});
export type PodSpec = z.infer<typeof podSpecSchema>;

export const podMetadataSchema = z.looseObject({
  name: z.string().optional(),
  generateName: z.string().optional(),
  namespace: z.string().optional(),
  annotations: z.record(z.string(), z.string()).optional(),
  labels: z.record(z.string(), z.string()).optional(),
});

/** A pod, or a workload's pod template (same metadata + spec shape). */
export const podSchema = z.looseObject({
  metadata: podMetadataSchema.optional(),
  spec: podSpecSchema,
});
export type Pod = z.infer<typeof podSchema>;
