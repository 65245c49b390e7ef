/**
 * `config-sidecar inject -f FILE|-`: the webhook's injection, offline, on
 * multi-document YAML (like `istioctl kube-inject`). Output goes to stdout
 * only when every document succeeded, so a pipe into `kubectl apply -f -`
 * never applies half a file.
 */
import { readFile } from 'node:fs/promises';
import { Option, type Command } from 'commander';
import { action, CliError, EXIT } from './cli-util.ts';
import { addInjectorOptions } from './webhook.ts';

async function readInput(file: string): Promise<string> {
  if (file === '-') {
    const chunks: Buffer[] = [];
    for await (const chunk of process.stdin as AsyncIterable<Buffer>) chunks.push(chunk);
    return Buffer.concat(chunks).toString('utf8');
  }
  try {
    return await readFile(file, 'utf8');
  } catch (err) {
    throw new CliError(`cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`, EXIT.usage);
  }
}

export function register(program: Command): void {
  const command = program
    .command('inject')
    .description('Inject the agent into Pods, Deployments, StatefulSets, DaemonSets, Jobs and CronJobs in YAML, offline.')
    .addOption(new Option('-f, --filename <file>', "YAML file (multi-document) or '-' for stdin").env('CONFIG_SIDECAR_FILENAME').makeOptionMandatory());
  addInjectorOptions(command)
    .addHelpText(
      'after',
      `
Examples:
  $ config-sidecar inject -f deployment.yaml | kubectl apply -f -
  $ kubectl get deploy web -o yaml | config-sidecar inject -f - > web-injected.yaml
  $ config-sidecar inject -f app.yaml --sidecar-image registry.example/config-sidecar:0.1.0

Only pod templates annotated config-sidecar.io/inject: "true" change; other
documents pass through. A ConfigMap named by config-sidecar.io/config-map in
the same input is checked against the pod's prefixes. See docs/KUBERNETES.md.`,
    )
    .action(
      action(async (options: Record<string, unknown>) => {
        const [{ parseInjectorSettings }, { injectYaml, InjectError }] = await Promise.all([
          import('../webhook/settings.ts'),
          import('../webhook/workloads.ts'),
        ]);
        const settings = parseInjectorSettings(options);
        const text = await readInput(String(options.filename));
        let output: string;
        try {
          output = injectYaml(text, settings);
        } catch (err) {
          if (err instanceof InjectError) throw new CliError(err.message, EXIT.failed);
          throw err;
        }
        process.stdout.write(output);
      }),
    );
}
