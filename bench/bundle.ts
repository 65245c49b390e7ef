/**
 * The bin as one bundle (esbuild) instead of tsc's modules plus node_modules,
 * for an A/B against the tsc build (docs/FOOTPRINT-LOG.md, "Footprint (issue
 * 15)", b16). Bundles src/cli/main.ts, with every package, into
 * `--outdir` (default dist/bundle): `main.mjs` plus one chunk per group of
 * dynamic imports (esbuild's splitting, so what a command does not run stays
 * unloaded, as with tsc's output). The re-exec of `agent` runs argv[1], so it
 * runs the bundle again.
 *
 *   npm run build && node bench/bundle.ts [--outdir dist/bundle] [--no-splitting] [--minify] [--agent-only] [--external PKG …]
 *   taskset -c 1 node bench/cached-read-ab.ts --only bare --agent-cli=bundle=$PWD/dist/bundle/main.mjs …
 *
 * `--no-splitting` puts everything in main.mjs (dynamic imports become lazy
 * initialisers in the same file: the code is not run, but its source is
 * parsed and held). `--agent-only` leaves the command table to tsc's
 * dist/cli/program.js, so the bundle holds what the re-executed agent's image
 * loads and little else; `--external` leaves a package to node_modules (an
 * external one that a bundled module imports statically is loaded at start,
 * so only the dynamically imported ones are worth it, e.g. `--external
 * chokidar --external @opentelemetry/sdk-node`). `--agent-cli` and
 * footprint.ts's `cli` field need the absolute path.
 *
 * Files the code finds next to itself (`new URL('./proto/…', import.meta.url)`:
 * proto files, migrations, the status page, package.json) are looked up where
 * tsc's build put them: each source file's `import.meta.url` becomes the URL of
 * its dist/ twin, so the bundle must stay inside dist/ (`npm run build` first).
 * CommonJS packages get a `require` from `createRequire` for their built-ins.
 */
import { build, type Plugin } from 'esbuild';
import { readFile, writeFile } from 'node:fs/promises';
import { join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { benchArgs } from './lib/args.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const SRC = join(ROOT, 'src');
const DIST = join(ROOT, 'dist');

const values = benchArgs('Usage: npm run build && node bench/bundle.ts [--outdir dist/bundle] [--no-splitting] [--minify] [--agent-only] [--external PKG …]', {
  outdir: { type: 'string', default: join(DIST, 'bundle') },
  'no-splitting': { type: 'boolean', default: false },
  minify: { type: 'boolean', default: false },
  'agent-only': { type: 'boolean', default: false },
  /** A package left to node_modules (repeatable; `@scope/*` allowed): one the serving agent only loads lazily, if ever. */
  external: { type: 'string', multiple: true, default: [] },
});
const outdir = resolve(values.outdir);
if (relative(DIST, outdir).startsWith('..')) {
  process.stderr.write(`bundle: --outdir ${outdir} is outside dist/: the bundle finds proto files, migrations and package.json where tsc's build put them; give a directory under dist/ (npm run build first)\n`);
  process.exit(2);
}

/** Each source file's `import.meta.url` as its dist/ twin's URL, relative to the chunk (all chunks are in outdir). */
const distUrls: Plugin = {
  name: 'dist-import-meta-url',
  setup(b) {
    b.onLoad({ filter: /\.ts$/ }, async (args) => {
      const text = await readFile(args.path, 'utf8');
      if (!args.path.startsWith(SRC) || !text.includes('import.meta.url')) return undefined;
      const twin = join(DIST, relative(SRC, args.path)).replace(/\.ts$/, '.js');
      const rel = relative(outdir, twin).split('\\').join('/');
      return { contents: text.replaceAll('import.meta.url', `new URL(${JSON.stringify(rel)}, import.meta.url).href`), loader: 'ts' };
    });
  },
};

/** `--agent-only`: the command table stays tsc's (dist/cli/program.js); the bundle is the re-executed agent's image. */
const programOutside: Plugin = {
  name: 'program-outside',
  setup(b) {
    b.onResolve({ filter: /^\.\/program\.ts$/ }, (args) => {
      if (args.importer !== join(SRC, 'cli', 'main.ts')) return undefined;
      return { path: relative(outdir, join(DIST, 'cli', 'program.js')).split('\\').join('/'), external: true };
    });
  },
};

const result = await build({
  entryPoints: { main: join(SRC, 'cli', 'main.ts') },
  outdir,
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node24',
  splitting: !values['no-splitting'],
  // Whitespace and syntax only: names stay, so profiles and stack traces still read.
  minifyWhitespace: values.minify,
  minifySyntax: values.minify,
  outExtension: { '.js': '.mjs' },
  chunkNames: 'chunk-[hash]',
  banner: { js: "import { createRequire as __bundleRequire } from 'node:module'; const require = __bundleRequire(import.meta.url);" },
  plugins: values['agent-only'] ? [distUrls, programOutside] : [distUrls],
  external: values.external,
  metafile: true,
  logLevel: 'warning',
});
await writeFile(join(outdir, 'meta.json'), JSON.stringify(result.metafile));
for (const [file, out] of Object.entries(result.metafile.outputs)) {
  if (file.endsWith('.mjs')) process.stdout.write(`${relative(ROOT, file)}\t${(out.bytes / 1024).toFixed(0)} KiB\t${Object.keys(out.inputs).length} inputs\n`);
}
process.stdout.write(`entry: ${join(outdir, 'main.mjs')} (an absolute path for --agent-cli and footprint.ts's cli field)\n`);
