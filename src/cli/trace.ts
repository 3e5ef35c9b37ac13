/**
 * `usernet trace`: follow packets through a running usernet, stage by stage.
 *
 *   usernet trace --control PATH --proto tcp --port 5201            one flow, both ways
 *   usernet trace --control PATH --sample 1000                      one packet in 1000
 *   usernet trace --control PATH --port 80 --count 10 --explain     ten journeys, with why
 *   usernet trace --control PATH --json --output trace.jsonl        records as JSON lines
 *
 * Each journey prints as an indented path (meter/trace-format.ts): the stages in the order the
 * packet met them, the function at each, the copies (from → to, bytes), the header rewrites
 * (field: old → new) and the time between stages. `--explain` adds a line per stage saying
 * what happens there and why. Filters are applied in usernet (only matching journeys are
 * sent); tracing costs nothing in usernet once the last `usernet trace` disconnects.
 */
import { createWriteStream, type WriteStream } from 'node:fs';
import { Command, InvalidArgumentError, Option } from 'commander';
import { ControlClient } from '../control/client';
import type { TraceRecord } from '../meter/trace';
import { formatJourney } from '../meter/trace-format';

interface TraceOptions {
  control?: string;
  proto?: 'tcp' | 'udp' | 'icmp' | 'arp';
  port?: number;
  address?: string;
  dir?: 'tx' | 'rx';
  path?: 'nat' | 'bridged' | 'local' | 'link';
  sample?: number;
  count?: number;
  payload?: boolean;
  explain?: boolean;
  json?: boolean;
  output?: string;
  times?: boolean;
}

function intIn(name: string, min: number, max: number) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min || n > max) throw new InvalidArgumentError(`${name} must be an integer in ${min}..${max}`);
    return n;
  };
}

export function traceCommand(): Command {
  return new Command('trace')
    .description("follow packets through a running usernet: each one's stages, copies, rewrites and times")
    .option('--control <path>', 'the control socket of the instance (usernet run --control PATH); default $USERNET_CONTROL')
    .addOption(new Option('--proto <proto>', 'only this protocol').choices(['tcp', 'udp', 'icmp', 'arp']))
    .option('--port <port>', 'only packets with this port (guest or host side)', intIn('--port', 0, 65535))
    .option('--address <addr>', 'only packets with this address (guest or host side)')
    .addOption(new Option('--dir <dir>', 'only one way: tx = guest→host, rx = host→guest').choices(['tx', 'rx']))
    .addOption(new Option('--path <path>', 'only journeys through the NAT, the bridged tap, or answered by usernet').choices(['nat', 'bridged', 'local', 'link']))
    .option('--sample <n>', 'keep one matching journey in N', intIn('--sample', 1, 1_000_000))
    .option('--count <n>', 'stop after N journeys', intIn('--count', 1, 10_000_000))
    .option('--payload', 'only packets that carry payload (no pure ACKs)')
    .option('--explain', 'one line per stage saying what happens there and why')
    .option('--json', 'one JSON record per line instead of text')
    .option('--output <file>', 'write to FILE instead of stdout')
    .option('--no-times', 'leave times out of the text')
    .action(async (o: TraceOptions) => {
      const path = o.control ?? process.env.USERNET_CONTROL;
      if (!path) throw Object.assign(new Error('trace: --control PATH is required (or USERNET_CONTROL)'), { code: 'EINVAL' });
      const out: WriteStream | NodeJS.WriteStream = o.output ? createWriteStream(o.output) : process.stdout;
      const client = await ControlClient.connect(path);
      let count = 0;
      await new Promise<void>((resolve, reject) => {
        const finish = (): void => {
          process.off('SIGINT', finish);
          process.off('SIGTERM', finish);
          client.close();
          resolve();
        };
        process.once('SIGINT', finish);
        process.once('SIGTERM', finish);
        client.onEvent((e) => {
          if (e.event === 'trace') {
            const r = e.record as TraceRecord;
            count++;
            out.write(o.json ? JSON.stringify(r) + '\n' : formatJourney(r, { explain: o.explain, noTimes: o.times === false }) + '\n\n');
          } else if (e.event === 'trace-end') finish();
        });
        client.onEnd(() => finish());
        client
          .request({
            cmd: 'trace',
            proto: o.proto,
            port: o.port,
            address: o.address,
            dir: o.dir,
            path: o.path,
            sample: o.sample,
            payloadOnly: o.payload === true ? true : undefined,
            count: o.count,
          })
          .then((r) => {
            const res = r as { meter?: string };
            if (res.meter === 'off') process.stderr.write('usernet trace: the instance runs with USERNET_METER=off; journeys will be empty\n');
          })
          .catch((err: Error) => {
            client.close();
            reject(err);
          });
      });
      if (o.output) await new Promise<void>((r) => (out as WriteStream).end(() => r()));
      if (!o.json) process.stderr.write(`${count} journeys\n`);
    });
}
