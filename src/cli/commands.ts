/**
 * Every subcommand module, in help order. Each exports `register(program)`
 * and keeps its component behind a dynamic import.
 */
import type { Command } from 'commander';
import { register as server } from './server.ts';
import { register as agent } from './agent.ts';
import { register as webhook } from './webhook.ts';
import { register as dev } from './dev.ts';
import { register as itemCommands } from './item-commands.ts';
import { register as restore } from './restore.ts';
import { register as get } from './get.ts';
import { register as watch } from './watch.ts';
import { register as inject } from './inject.ts';
import { register as doctor } from './doctor.ts';
import { register as verify } from './verify.ts';
import { register as list } from './list.ts';
import { register as del } from './delete.ts';
import { register as login } from './login.ts';
import { register as exec } from './exec.ts';
import { register as status } from './status.ts';
import { register as rollout } from './rollout.ts';

export const COMMAND_MODULES: ReadonlyArray<(program: Command) => void> = [
  server,
  agent,
  webhook,
  dev,
  itemCommands,
  restore,
  list,
  del,
  login,
  get,
  watch,
  inject,
  doctor,
  verify,
  exec,
  status,
  rollout,
];
