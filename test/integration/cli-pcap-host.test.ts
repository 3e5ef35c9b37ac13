/**
 * `usernet run --pcap FILE --pcap-host FILE`: both sides of the NAT in one pcapng (interfaces
 * "guest" and "host"), and in two classic pcap files. tshark reads them clean (no malformed
 * frames, no holes in the synthesized TCP streams), holds as many frames as the capture stages
 * counted, and shows the same payload on both sides of the translation: the guest's addresses
 * on one side, the host sockets' (127.0.0.1 and their ports) on the other.
 */
import { execFile } from 'node:child_process';
import dgram from 'node:dgram';
import net from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { testIf } from '../helpers/env';
import { withNatGuest } from '../helpers/nat-guest';

const test = testIf('root', 'netns', 'tun', 'cmd:tshark', 'cmd:ping');
const UP = 1024 * 1024;
const DOWN = 300_000;

function tshark(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile('tshark', args, { maxBuffer: 64 << 20 }, (err, stdout, stderr) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout: String(stdout), stderr: String(stderr) }),
    );
  });
}

async function lines(file: string, filter: string, field = 'frame.number'): Promise<string[]> {
  const r = await tshark(['-r', file, '-Y', filter, '-T', 'fields', '-e', field]);
  if (r.code !== 0) throw new Error(`tshark -Y '${filter}': ${r.stderr}`);
  return r.stdout.split('\n').filter((l) => l.trim() !== '');
}

async function sum(file: string, filter: string, field: string): Promise<number> {
  return (await lines(file, filter, field)).reduce((a, l) => a + Number(l), 0);
}

interface Servers {
  sink: number;
  source: number;
  udp: number;
  close(): Promise<void>;
}

async function servers(): Promise<Servers> {
  const sink = net.createServer((s) => {
    s.resume();
    s.on('end', () => s.end());
    s.on('error', () => {});
  });
  const source = net.createServer((s) => {
    s.on('error', () => {});
    s.end(Buffer.alloc(DOWN, 0x61));
  });
  const udp = dgram.createSocket('udp4');
  udp.on('message', (m, from) => udp.send(m, from.port, from.address));
  await Promise.all([
    new Promise<void>((r) => sink.listen(0, '127.0.0.1', r)),
    new Promise<void>((r) => source.listen(0, '127.0.0.1', r)),
    new Promise<void>((r) => udp.bind(0, '127.0.0.1', r)),
  ]);
  return {
    sink: (sink.address() as net.AddressInfo).port,
    source: (source.address() as net.AddressInfo).port,
    udp: udp.address().port,
    close: async () => {
      udp.close();
      await Promise.all([new Promise((r) => sink.close(r)), new Promise((r) => source.close(r))]);
    },
  };
}

interface Counted {
  pcapFrames: number;
  hostFrames: number;
}

/** Traffic of every kind through the guest; returns what the capture stages counted. */
async function traffic(t: import('ava').ExecutionContext, g: import('../helpers/nat-guest').NatGuest, s: Servers): Promise<Counted> {
  const up = await g.sh(`head -c ${UP} /dev/zero > /dev/tcp/10.0.2.2/${s.sink}`, 60_000);
  t.is(up.code, 0, up.stderr);
  const down = await g.sh(`cat < /dev/tcp/10.0.2.2/${s.source} | wc -c`, 60_000);
  t.is(Number(down.stdout.trim()), DOWN, down.stderr);
  const ping = await g.exec(['ping', '-c', '2', '-i', '0.2', '-W', '5', '10.0.2.2']);
  t.is(ping.code, 0, ping.stdout + ping.stderr);
  const u = await g.sh(`exec 3<>/dev/udp/10.0.2.2/${s.udp}; printf 'hello-udp' >&3; timeout 5 head -c 9 <&3`, 20_000);
  t.is(u.stdout, 'hello-udp', u.stderr);
  await new Promise((r) => setTimeout(r, 1500)); // FINs, last ACKs
  const st = (await g.ctl({ cmd: 'stats' })) as { stages: { name: string; frames: number }[] };
  const f = (n: string): number => st.stages.find((x) => x.name === n)?.frames ?? 0;
  const { code } = await g.stop();
  t.is(code, 0, g.stderr);
  return { pcapFrames: f('pcap.write'), hostFrames: f('pcap.host') };
}

test('--pcap and --pcap-host to one pcapng: both sides of the NAT, read clean by tshark', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'usernet-pcaphost-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'nat.pcapng');
  const s = await servers();
  t.teardown(() => s.close());
  let counted: Counted = { pcapFrames: 0, hostFrames: 0 };
  await withNatGuest({ args: ['--pcap', file, '--pcap-host', file] }, async (g) => {
    counted = await traffic(t, g, s);
  });
  const all = await tshark(['-r', file]);
  t.is(all.code, 0, all.stderr);
  t.notRegex(all.stderr, /damaged|cut short|malformed/i);
  const frames = all.stdout.split('\n').filter((l) => l.trim()).length;
  t.true(frames >= counted.pcapFrames && frames <= counted.pcapFrames + 6, `${frames} frames, the writer counted ${counted.pcapFrames}`);
  const ifaces = await lines(file, 'frame', 'frame.interface_name');
  const host = ifaces.filter((i) => i === 'host').length;
  t.true(host >= counted.hostFrames && host <= counted.hostFrames + 2, `host interface: ${host} frames, pcap.host counted ${counted.hostFrames}`);
  t.true(ifaces.filter((i) => i === 'guest').length > 0);
  t.deepEqual(await lines(file, '_ws.malformed || _ws.expert.severity == error'), [], 'no malformed frames, no errors');

  const G = 'frame.interface_name == "guest"';
  const H = 'frame.interface_name == "host"';
  // the upload: the same payload on both sides, under different addresses
  t.is(await sum(file, `${H} && tcp.dstport == ${s.sink}`, 'tcp.len'), UP, 'host side: what the host socket took');
  t.true((await sum(file, `${G} && tcp.dstport == ${s.sink}`, 'tcp.len')) >= UP, 'guest side: what the guest sent');
  t.deepEqual([...new Set(await lines(file, `${H} && tcp.dstport == ${s.sink}`, 'ip.src'))], ['127.0.0.1']);
  t.deepEqual([...new Set(await lines(file, `${G} && tcp.dstport == ${s.sink}`, 'ip.dst'))], ['10.0.2.2']);
  t.is((await lines(file, `${H} && tcp.dstport == ${s.sink} && tcp.flags.syn == 1`)).length, 1, 'a synthesized SYN');
  t.is((await lines(file, `${H} && tcp.srcport == ${s.sink} && tcp.flags.syn == 1 && tcp.flags.ack == 1`)).length, 1, 'and SYN-ACK');
  t.true((await lines(file, `${H} && tcp.dstport == ${s.sink} && tcp.flags.fin == 1`)).length >= 1, 'FIN after the data');
  // the download
  t.is(await sum(file, `${H} && tcp.srcport == ${s.source}`, 'tcp.len'), DOWN, 'host side: what the host peer sent, once');
  t.deepEqual(await lines(file, `${H} && (tcp.analysis.lost_segment || tcp.analysis.ack_lost_segment || tcp.analysis.out_of_order)`), [], 'consistent synthesized streams');
  // UDP and ICMP
  t.is((await lines(file, `${H} && udp.dstport == ${s.udp} && ip.dst == 127.0.0.1`)).length, 1);
  t.is((await lines(file, `${H} && udp.srcport == ${s.udp}`)).length, 1, 'the echo back');
  t.is((await lines(file, `${G} && udp.dstport == ${s.udp} && ip.dst == 10.0.2.2`)).length, 1);
  t.is((await lines(file, `${H} && icmp.type == 8 && ip.dst == 127.0.0.1`)).length, 2, 'echo requests on the host side');
  t.is((await lines(file, `${G} && icmp.type == 0 && ip.src == 10.0.2.2`)).length, 2, 'replies on the guest side');
});

test('--pcap and --pcap-host to two classic pcap files', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'usernet-pcaphost-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const guestFile = path.join(dir, 'guest.pcap');
  const hostFile = path.join(dir, 'host.pcap');
  const s = await servers();
  t.teardown(() => s.close());
  let counted: Counted = { pcapFrames: 0, hostFrames: 0 };
  await withNatGuest({ args: ['--pcap', guestFile, '--pcap-host', hostFile] }, async (g) => {
    counted = await traffic(t, g, s);
  });
  for (const f of [guestFile, hostFile]) {
    const r = await tshark(['-r', f]);
    t.is(r.code, 0, r.stderr);
    t.notRegex(r.stderr, /damaged|cut short|malformed/i);
  }
  const host = (await lines(hostFile, 'frame')).length;
  t.true(host >= counted.hostFrames && host <= counted.hostFrames + 2, `${host} host frames, pcap.host counted ${counted.hostFrames}`);
  t.is(await sum(hostFile, `tcp.dstport == ${s.sink}`, 'tcp.len'), UP);
  t.deepEqual([...new Set(await lines(guestFile, 'ip', 'ip.src'))].sort(), ['10.0.2.15', '10.0.2.2']);
  t.deepEqual([...new Set(await lines(hostFile, 'ip', 'ip.src'))], ['127.0.0.1']);
});
