import type { Command } from 'commander';

// Placeholder: put, get, history, rollback, rotate, backup register here.
export function register(_program: Command): void {}
