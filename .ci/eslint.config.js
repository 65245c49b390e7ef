// Lint configuration lives under .ci/ because the repository's top level is fixed.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import globals from 'globals';

export default tseslint.config(
  { ignores: ['dist/**', 'src/client/dist/**', 'node_modules/**', 'bench/results/**', 'bench/.build*/**', 'coverage/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ['**/*.ts'],
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/consistent-type-imports': 'error',
      'no-console': 'off',
    },
  },
  {
    // A value import of node:http loads node's bundled fetch (src/shared/node-http.ts says why); the client package (no shared code) takes it itself, src/client/index.ts.
    files: ['src/**/*.ts'],
    ignores: ['src/shared/node-http.ts', 'src/client/**'],
    rules: {
      '@typescript-eslint/no-restricted-imports': [
        'error',
        { paths: [{ name: 'node:http', message: 'Take node:http functions from src/shared/node-http.ts (an ESM import loads node\'s bundled fetch); types with import type.', allowTypeImports: true }] },
      ],
    },
  },
  {
    // The status page: plain ES modules run by the browser, no build step.
    files: ['src/server/ui/**/*.js'],
    languageOptions: { globals: globals.browser },
  },
);
