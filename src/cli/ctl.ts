/**
 * `usernet ctl --control PATH ...`: change or query a running instance through its control
 * socket (src/control/).
 *
 *   usernet ctl --control PATH hostfwd add tcp:127.0.0.1:8080-:80
 *   usernet ctl --control PATH hostfwd remove tcp:127.0.0.1:8080-:80
 *   usernet ctl --control PATH hostfwd list
 *   usernet ctl --control PATH stats [--reset]      (the meter snapshot, JSON)
 *   usernet ctl --control PATH info
 *
 * Rules use QEMU's hostfwd syntax. Output is plain text for people (one rule per line) or
 * JSON with `--json`; `stats` and `info` are always JSON. A server error is printed as
 * `usernet: CODE: message` and exits 1.
 */
import { Command } from 'commander';
import { controlRequest } from '../control/client';

interface CtlOptions {
  control: string;
  json?: boolean;
}

function print(value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + '\n');
}

function ruleOf(r: unknown): string {
  if (typeof r === 'string') return r;
  if (r && typeof r === 'object' && typeof (r as { rule?: unknown }).rule === 'string') return (r as { rule: string }).rule;
  return JSON.stringify(r);
}

export function ctlCommand(): Command {
  const ctl = new Command('ctl')
    .description('change or query a running usernet through its control socket')
    .requiredOption('--control <path>', 'the control socket of the instance (usernet run --control PATH)')
    .option('--json', 'print the raw JSON result');

  const opts = (): CtlOptions => ctl.opts<CtlOptions>();

  const hostfwd = new Command('hostfwd').description('port forwards host→guest (QEMU hostfwd syntax)');
  hostfwd
    .command('add')
    .argument('<rule>', '[tcp|udp]:[hostaddr]:hostport-[guestaddr]:guestport')
    .description('start forwarding a host port to the guest')
    .action(async (rule: string) => {
      const o = opts();
      const r = await controlRequest(o.control, { cmd: 'hostfwd.add', rule });
      if (o.json) print(r);
      else process.stdout.write(`added ${ruleOf(r)}\n`);
    });
  hostfwd
    .command('remove')
    .alias('rm')
    .argument('<rule>', 'a rule as added (or as `hostfwd list` prints it)')
    .description('stop a forward and close its listening socket')
    .action(async (rule: string) => {
      const o = opts();
      const r = await controlRequest(o.control, { cmd: 'hostfwd.remove', rule });
      if (o.json) print(r);
      else process.stdout.write(`removed ${ruleOf(r) === 'null' ? rule : ruleOf(r)}\n`);
    });
  hostfwd
    .command('list')
    .alias('ls')
    .description('the forwards in force, one per line')
    .action(async () => {
      const o = opts();
      const r = await controlRequest(o.control, { cmd: 'hostfwd.list' });
      if (o.json) print(r);
      else for (const f of Array.isArray(r) ? r : []) process.stdout.write(ruleOf(f) + '\n');
    });
  ctl.addCommand(hostfwd);

  ctl
    .command('stats')
    .description("the instance's meter snapshot as JSON (stages: frames, bytes, copies, drops, time)")
    .option('--reset', 'reset the counters after reading them')
    .action(async (o: { reset?: boolean }) => {
      print(await controlRequest(opts().control, { cmd: 'stats', reset: o.reset === true }));
    });

  ctl
    .command('info')
    .description("the instance's pid, addresses and frontend, as JSON")
    .action(async () => {
      print(await controlRequest(opts().control, { cmd: 'info' }));
    });

  return ctl;
}
