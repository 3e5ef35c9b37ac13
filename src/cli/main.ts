#!/usr/bin/env node
/**
 * The `usernet` command: one tool, a few verbs (DESIGN.md, "The command line"). Each verb is a
 * file in this folder returning a commander Command; this file only assembles them and turns
 * errors into exit codes: a usage error or a bad option value (`code: 'EINVAL'`) exits 2, any
 * other failure exits 1, both with one `usernet: ...` line on stderr (no stack trace unless
 * USERNET_DEBUG is set). Compiled by tsc to dist/src/cli/main.js, the package's bin.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { Command, CommanderError } from 'commander';
import { runCommand } from './run';
import { ctlCommand } from './ctl';
import { vmCommand } from './vm';
import { qemuArgsCommand } from './qemu-args';
import { statsCommand } from './stats';
import { traceCommand } from './trace';

function packageVersion(): string {
  for (let dir = __dirname, i = 0; i < 5; i++, dir = path.dirname(dir)) {
    try {
      const pkg = JSON.parse(readFileSync(path.join(dir, 'package.json'), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'usernet' && pkg.version) return pkg.version;
    } catch {
      /* keep looking */
    }
  }
  return '0.0.0';
}

export function buildProgram(): Command {
  const program = new Command('usernet')
    .description('a network backend for virtual machines: emulated NICs, a tap device or a user-mode NAT stack, every copy metered')
    .version(packageVersion())
    .showHelpAfterError()
    .exitOverride();
  program.addCommand(runCommand());
  program.addCommand(ctlCommand());
  program.addCommand(vmCommand());
  program.addCommand(qemuArgsCommand());
  program.addCommand(statsCommand());
  program.addCommand(traceCommand());
  // commander copies these settings only to subcommands made with .command(); do it for all
  const walk = (c: Command): void => {
    for (const sub of c.commands) {
      sub.exitOverride().showHelpAfterError();
      walk(sub);
    }
  };
  walk(program);
  return program;
}

export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
    // a verb may set its own exit status (`usernet vm` exits with the guest command's)
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      // help and version "errors" are successes; commander has already printed its message
      return err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help' ? 0 : 2;
    }
    const e = err as { code?: unknown; message?: unknown; stack?: unknown };
    const code = typeof e?.code === 'string' ? e.code : '';
    const message = typeof e?.message === 'string' ? e.message : String(err);
    process.stderr.write(`usernet: ${code && !message.includes(code) ? code + ': ' : ''}${message}\n`);
    if (process.env.USERNET_DEBUG && typeof e?.stack === 'string') process.stderr.write(e.stack + '\n');
    return code === 'EINVAL' ? 2 : 1;
  }
}

if (require.main === module) {
  main(process.argv).then(
    (code) => {
      process.exitCode = code;
    },
    (err: unknown) => {
      process.stderr.write(`usernet: ${String(err)}\n`);
      process.exitCode = 1;
    },
  );
}
