/**
 * The node binary's page attribution (bench/binary-pages.ts and its
 * bench/lib parts) on the real node binary and real processes: the ELF's
 * sections and symbols, the named runs and ICU items, a process's resident
 * pages split without losing any, and a page a process touches found where
 * it belongs. Never asserts a size the binary could change.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { attributePages, librariesOf } from '../bench/lib/binary-attribution.ts';
import { readElfImage } from '../bench/lib/elf-image.ts';
import { icuDataItems } from '../bench/lib/icu-data.ts';
import { PAGE_BYTES, residentPagesOfExe } from '../bench/lib/page-map.ts';

const EXE = realpathSync(process.execPath);
const image = readElfImage(EXE);
const icuData = image.symbols.find((s) => /^icudt\d+_dat$/.test(s.name));

test('the ELF: sections, sized symbols in order, the unnamed .rodata runs named by what they hold', () => {
  const names = image.sections.map((s) => s.name);
  assert.ok(names.includes('.text') && names.includes('.rodata'), names.join(' '));
  assert.ok(image.symbols.length > 1000);
  assert.ok(image.symbols.every((s, i) => i === 0 || (image.symbols[i - 1]?.offset ?? 0) <= s.offset), 'sorted by offset');
  assert.ok(icuData && icuData.size > 2 ** 20, 'ICU common data linked in');
  const ranges = image.symbols.filter((s) => s.name.startsWith('['));
  assert.ok(ranges.some((s) => s.name.startsWith("[JS sources of node's built-in modules")), ranges.map((s) => s.name).join(' '));
  assert.ok(ranges.some((s) => s.name.startsWith('[start-up snapshot')), ranges.map((s) => s.name).join(' '));
  const items = icuDataItems(EXE, icuData);
  assert.ok(items.some((s) => s.name.endsWith(': zone/pool.res')) && items.some((s) => s.name.endsWith(': metaZones.res')), 'ICU items by name');
  assert.ok(items.every((s) => s.offset >= icuData.offset && s.offset + s.size <= icuData.offset + icuData.size), 'inside the data');
});

test('this process: every resident page of the binary counted once, in a section, on its libraries', () => {
  const pages = residentPagesOfExe(process.pid);
  assert.equal(pages.exe, EXE);
  assert.ok(pages.file.length > 100, `${pages.file.length} file pages`);
  const all = [...pages.file, ...pages.anon];
  const { bySection, byLibrary } = attributePages(image, librariesOf(image), all);
  const sum = (m: ReadonlyMap<string, number>): number => [...m.values()].reduce((a, b) => a + b, 0);
  assert.equal(sum(bySection), all.length * PAGE_BYTES);
  assert.ok((bySection.get('.text') ?? 0) > 0 && (bySection.get('.rodata') ?? 0) > 0);
  assert.ok((byLibrary.get('V8 builtins (embedded blob)') ?? 0) > 0, [...byLibrary.keys()].join(', '));
});

/** Resident bytes of ICU's time zone names in a node process that ran `code`, read before it exits. */
async function zoneNamesResident(code: string): Promise<number> {
  const child = spawn(process.execPath, ['-e', `${code}; process.stdout.write('ready\\n'); setInterval(() => {}, 1 << 30)`], { stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    await new Promise<void>((resolve, reject) => {
      child.stdout.on('data', (chunk: Buffer) => chunk.toString().includes('ready') && resolve());
      child.once('exit', (code) => reject(new Error(`probe exited ${code}`)));
    });
    const pages = residentPagesOfExe(child.pid as number);
    const pool = icuDataItems(EXE, icuData as NonNullable<typeof icuData>).find((s) => s.name.endsWith(': zone/pool.res'));
    assert.ok(pool);
    return pages.file.filter((p) => p + PAGE_BYTES > pool.offset && p < pool.offset + pool.size).length * PAGE_BYTES;
  } finally {
    child.kill('SIGKILL');
  }
}

test("a page a process touches is found in its item: formatting a date loads ICU's zone names, Date.now() does not", async () => {
  assert.equal(await zoneNamesResident('globalThis.t = Date.now()'), 0);
  assert.ok((await zoneNamesResident('globalThis.t = new Date(0).toISOString()')) > 0);
});

test('the tool refuses a target it does not know, naming the option', () => {
  const tool = fileURLToPath(new URL('../bench/binary-pages.ts', import.meta.url));
  const r = spawnSync(process.execPath, [tool, '--target', 'nginx'], { encoding: 'utf8' });
  assert.equal(r.status, 2);
  assert.match(r.stderr, /--target takes one of bare, libs, agent, got "nginx"/);
});
