/**
 * Runs the real `config-sidecar` CLI (Node 24 on the TypeScript sources) for
 * the Kubernetes tests, and lists the golden cases under test/fixtures/k8s.
 */
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const CLI_MAIN = join(REPO_ROOT, 'src', 'cli', 'main.ts');
export const INJECT_FIXTURES = join(REPO_ROOT, 'test', 'fixtures', 'k8s', 'inject');

export interface CliResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs `config-sidecar ...args` with `input` on stdin; resolves when it exits. */
export function runCli(args: readonly string[], input = '', env: NodeJS.ProcessEnv = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI_MAIN, ...args], {
      cwd: REPO_ROOT,
      env: { ...process.env, ...env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
    child.stdin.end(input);
  });
}

export interface GoldenCase {
  readonly name: string;
  readonly inputPath: string;
  readonly expectedPath: string;
  readonly input: string;
  /** Extra injector flags for this case (`<name>.flags.json`). */
  readonly flags: readonly string[];
}

export function goldenCases(): GoldenCase[] {
  return readdirSync(INJECT_FIXTURES)
    .filter((f) => f.endsWith('.in.yaml'))
    .sort()
    .map((file) => {
      const name = file.slice(0, -'.in.yaml'.length);
      const flagsPath = join(INJECT_FIXTURES, `${name}.flags.json`);
      return {
        name,
        inputPath: join(INJECT_FIXTURES, file),
        expectedPath: join(INJECT_FIXTURES, `${name}.out.yaml`),
        input: readFileSync(join(INJECT_FIXTURES, file), 'utf8'),
        flags: existsSync(flagsPath) ? (JSON.parse(readFileSync(flagsPath, 'utf8')) as string[]) : [],
      };
    });
}
