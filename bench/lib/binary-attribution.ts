/**
 * Resident pages of the node binary attributed to its sections, to the
 * library each symbol comes from, and to the symbols themselves (bytes of
 * each symbol that lie on a resident page). The library is read from the
 * symbol's (mangled) name; a name that says nothing, such as a file-local
 * table, takes the library of the symbol before it in the same section, since
 * the linker lays each object file out in one piece. Bytes of a resident page
 * no symbol covers (merged string literals, padding) count as "unnamed" in
 * their section. For bench/binary-pages.ts.
 */
import type { ElfImage, ElfSymbol } from './elf-image.ts';
import { PAGE_BYTES } from './page-map.ts';

export interface Attribution {
  readonly bySection: ReadonlyMap<string, number>;
  readonly byLibrary: ReadonlyMap<string, number>;
  readonly bySymbol: ReadonlyMap<string, number>;
}

/** Library by symbol name, first match wins; `icuVersion` is the major version in `icudt<v>_dat`. */
function libraryRules(icuVersion: string): ReadonlyArray<readonly [string, RegExp]> {
  return [
    ['ICU data (icudt*_dat)', /^icudt\d+_dat/],
    ['start-up snapshot', /^\[start-up snapshot/],
    ["JS sources of node's built-in modules", /^\[JS sources/],
    ['V8 builtins (embedded blob)', /^Builtins_|embedded_blob/],
    ['V8 inspector', /v8_inspector|crdtp/],
    ['ICU code', new RegExp(`icu_${icuVersion}|_${icuVersion}$`)],
    ['node:http2 (nghttp2)', /nghttp2/],
    ['QUIC (ngtcp2, nghttp3)', /ngtcp2|nghttp3/],
    ['node:http (llhttp)', /llhttp/],
    ['zlib', /^Cr_z_|zlib|^(deflate|inflate|crc32|adler32)|_tr_/],
    ['brotli', /[Bb]rotli|kStaticDictionary/],
    ['zstd', /ZSTD|zstd|^HUF_|^FSE_/],
    ['libuv', /^uv_|^uv__/],
    ['c-ares', /ares_/],
    ['sqlite', /sqlite3/],
    ['simdjson / simdutf / ada', /simdjson|simdutf|3ada|^ada_/],
    ['uvwasi', /uvwasi/],
    ['node (src/)', /4node|7ncrypto|6nbytes/],
    [
      'OpenSSL',
      /^_?(ossl|OSSL|OPENSSL|openssl|EVP|evp|SSL|ssl|tls|TLS|dtls|DTLS|BN_|bn_|EC_|ec_|ECDSA|ECDH|RSA|rsa|DSA|dsa|DH_|dh_|X509|x509|ASN1|asn1|CRYPTO|ERR_|err_|BIO|bio_|PEM|pem_|OBJ_|obj_|SHA|sha\d|MD5|md5|AES|aes|bsaes|vpaes|ChaCha|chacha|Poly1305|poly1305|CMS|cms_|PKCS|pkcs|HMAC|CMAC|KDF|kdf|RAND|rand_|ENGINE|engine_|CONF|conf_|OCSP|ocsp|CT_|SCT|ecp_|gcm_|ecx|ED25519|X25519|x25519|ossl_|i2d_|d2i_|camellia|Camellia|DES_|des_|ripemd|RIPEMD|whirlpool|sm2|sm3|sm4|aria|ARIA|blake2|keccak|nid_objs|k25519|ecp_nistz256)/,
    ],
    ['V8 wasm (Liftoff, decoder, wasm TurboFan)', /2v88internal4wasm|[Ww]asm/],
    ['V8 Maglev', /2v88internal6maglev/],
    ['V8 TurboFan / Turboshaft', /2v88internal8compiler/],
    ['V8 GC', /2v88internal.*(Scaveng|MarkCompact|Mark(ing|er)|Evacuat|Sweep|Compactor|Heap|GC|Minor|Concurrent)|cppgc/],
    ['V8 parser, bytecode, interpreter', /2v88internal.*(Pars|Scanner|Scope|Bytecode|interpreter|Preparse|AstNode|Ast[A-Z]|Compiler)/],
    ['V8 regexp', /2v88internal.*(RegExp|Regexp|regexp)/],
    ['V8 other', /2v8|6disasm|^v8_|7unibrow|4heap|4absl|3fmt/],
    ['C++ standard library', /^_ZN?K?St|^_ZSt|^__cxa|^__gnu|9__gnu/],
  ];
}

/** Each symbol's library; a name no rule matches takes the library of the symbol before it in its section. */
export function librariesOf(image: ElfImage): readonly string[] {
  const icu = /^icudt(\d+)_dat/.exec(image.symbols.find((s) => /^icudt\d+_dat/.test(s.name))?.name ?? '')?.[1] ?? '\\d\\d';
  const rules = libraryRules(icu);
  let previous: { section: string; library: string } | undefined;
  return image.symbols.map((s) => {
    const matched = rules.find(([, re]) => re.test(s.name))?.[0];
    const library = matched ?? (previous?.section === s.section ? previous.library : `unknown (${s.section})`);
    previous = { section: s.section, library };
    return library;
  });
}

const add = (map: Map<string, number>, key: string, bytes: number): void => {
  if (bytes > 0) map.set(key, (map.get(key) ?? 0) + bytes);
};

/** Splits the bytes of `pages` (file offsets of resident pages) over sections, libraries and symbols. */
export function attributePages(image: ElfImage, libraries: readonly string[], pages: readonly number[]): Attribution {
  const resident = new Set(pages);
  const bySection = new Map<string, number>();
  const byLibrary = new Map<string, number>();
  const bySymbol = new Map<string, number>();
  const overlap = (start: number, size: number, page: number): number => Math.max(0, Math.min(start + size, page + PAGE_BYTES) - Math.max(start, page));
  const pagesOf = function* (start: number, size: number): Generator<number> {
    for (let page = start - (start % PAGE_BYTES); page < start + size; page += PAGE_BYTES) if (resident.has(page)) yield page;
  };
  let inSections = 0;
  for (const section of image.sections) {
    for (const page of pagesOf(section.offset, section.size)) {
      const bytes = overlap(section.offset, section.size, page);
      add(bySection, section.name, bytes);
      inSections += bytes;
    }
  }
  add(bySection, '(outside sections: headers, padding)', pages.length * PAGE_BYTES - inSections);
  const covered = new Map<number, number>();
  image.symbols.forEach((s: ElfSymbol, i) => {
    for (const page of pagesOf(s.offset, s.size)) {
      const bytes = overlap(s.offset, s.size, page);
      add(bySymbol, s.name, bytes);
      add(byLibrary, libraries[i] as string, bytes);
      covered.set(page, (covered.get(page) ?? 0) + bytes);
    }
  });
  for (const section of image.sections) {
    for (const page of pagesOf(section.offset, section.size)) {
      const inSection = overlap(section.offset, section.size, page);
      const share = inSection / PAGE_BYTES;
      add(byLibrary, `unnamed (${section.name})`, Math.max(0, inSection - (covered.get(page) ?? 0) * share));
    }
  }
  return { bySection, byLibrary, bySymbol };
}
