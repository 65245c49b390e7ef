/**
 * TLS material for the REST and gRPC listeners, read once and re-read when the
 * files change (cert-manager and Secret volumes replace them in place). One
 * chokidar watcher feeds both: REST swaps its secure context, gRPC gets the
 * new identity through a grpc-js certificate provider. A pair that fails to
 * load (e.g. key and certificate caught mid-replacement) is logged and the
 * previous one stays in use.
 */
import { readFileSync } from 'node:fs';
import { createPrivateKey, X509Certificate } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { watch, type FSWatcher } from 'chokidar';
import type { Logger } from '../shared/logger.ts';
import { SettingError } from '../shared/settings.ts';

/** Waits for writes to settle before reloading, so a half-written file is not read. */
const TLS_WRITE_STABILITY_MS = 100;

export interface TlsFiles {
  readonly cert: string;
  readonly key: string;
}

export interface TlsPair {
  readonly cert: Buffer;
  readonly key: Buffer;
}

type IdentityListener = Parameters<grpc.experimental.CertificateProvider['addIdentityCertificateListener']>[0];

/** Reads and checks a certificate/key pair; throws SettingError naming the flag. */
export function readTls(files: TlsFiles): TlsPair {
  const read = (path: string, flag: string): Buffer => {
    try {
      return readFileSync(path);
    } catch (err) {
      throw new SettingError(flag, `cannot read "${path}" (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
    }
  };
  const pair = { cert: read(files.cert, '--tls-cert (CONFIG_SIDECAR_TLS_CERT)'), key: read(files.key, '--tls-key (CONFIG_SIDECAR_TLS_KEY)') };
  let matches: boolean;
  try {
    matches = new X509Certificate(pair.cert).checkPrivateKey(createPrivateKey(pair.key));
  } catch (err) {
    throw new SettingError('--tls-cert (CONFIG_SIDECAR_TLS_CERT)', `"${files.cert}" / "${files.key}" are not a PEM certificate and key (${(err as Error).message})`);
  }
  if (!matches) throw new SettingError('--tls-key (CONFIG_SIDECAR_TLS_KEY)', `"${files.key}" is not the private key of "${files.cert}"`);
  return pair;
}

export class TlsSource {
  #pair: TlsPair;
  readonly #files: TlsFiles;
  readonly #logger: Logger;
  readonly #listeners = new Set<(pair: TlsPair) => void>();
  #watcher: FSWatcher | undefined;

  constructor(files: TlsFiles, logger: Logger) {
    this.#files = files;
    this.#logger = logger;
    this.#pair = readTls(files);
  }

  get current(): TlsPair {
    return this.#pair;
  }

  onChange(listener: (pair: TlsPair) => void): void {
    this.#listeners.add(listener);
  }

  watch(): void {
    this.#watcher = watch([this.#files.cert, this.#files.key], {
      ignoreInitial: true,
      awaitWriteFinish: { stabilityThreshold: TLS_WRITE_STABILITY_MS, pollInterval: 20 },
    });
    this.#watcher.on('all', () => {
      try {
        this.#pair = readTls(this.#files);
      } catch (err) {
        this.#logger.error({ err: (err as Error).message }, 'TLS reload failed; keeping the previous certificate');
        return;
      }
      for (const listener of this.#listeners) listener(this.#pair);
      this.#logger.info({ cert: this.#files.cert }, 'TLS certificate reloaded');
    });
  }

  /** Server credentials whose identity follows this source. */
  grpcCredentials(): grpc.ServerCredentials {
    const identityListeners = new Set<IdentityListener>();
    this.onChange((pair) => {
      for (const listener of identityListeners) listener({ certificate: pair.cert, privateKey: pair.key });
    });
    const provider: grpc.experimental.CertificateProvider = {
      addCaCertificateListener: () => {},
      removeCaCertificateListener: () => {},
      addIdentityCertificateListener: (listener) => {
        identityListeners.add(listener);
        // Deferred: grpc-js registers its own watcher only after this call returns.
        queueMicrotask(() => {
          if (identityListeners.has(listener)) listener({ certificate: this.#pair.cert, privateKey: this.#pair.key });
        });
      },
      removeIdentityCertificateListener: (listener) => {
        identityListeners.delete(listener);
      },
    };
    // grpc-js's exported function passes its first argument on as the identity provider (no client CA: no mTLS).
    return grpc.experimental.createCertificateProviderServerCredentials(provider, null, false);
  }

  async close(): Promise<void> {
    await this.#watcher?.close();
  }
}

export function insecureGrpcCredentials(): grpc.ServerCredentials {
  return grpc.ServerCredentials.createInsecure();
}
