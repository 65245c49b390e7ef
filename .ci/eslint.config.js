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
    // The status page: plain ES modules run by the browser, no build step.
    files: ['src/server/ui/**/*.js'],
    languageOptions: { globals: globals.browser },
  },
);
