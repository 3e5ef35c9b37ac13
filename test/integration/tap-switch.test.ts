/**
 * The switch with real kernels as guests (namespaces behind the netns transport) and a real
 * uplink:
 *  - uplink = TapBackend on the bridged test network: the two guests ping each other and the
 *    host side, move 32 MiB between each other (sha256 checked) — once with ports that take
 *    GSO (the super-frames cross as they are, no copy) and once with plain ports (the switch
 *    segments in software, metered) — and the unicast between them is not flooded to the uplink
 *    once learned; host → guest TCP through the tap;
 *  - uplink = the NAT stack: both guests reach the gateway and a host loopback server, and
 *    each other.
 */
import { createHash } from 'node:crypto';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { testIf } from '../helpers/env';
import { withSandbox, type Sandbox } from '../helpers/netns';
import { withBridgedNet } from '../helpers/bridged-net';
import { NetnsTapPort } from '../../src/transports/netns-tap';
import { Switch } from '../../src/link/switch';
import { Meter, type StageSnapshot } from '../../src/meter/meter';
import { NO_OFFLOADS, type NetOffloads } from '../../src/devices/virtio/net-offloads';
import { createNatStack } from '../../src/backends/nat';

/** The switch's meter stage, whatever the meter's naming scheme calls it ('switch', 'link.switch'). */
function switchStage(meter: Meter): StageSnapshot {
  const s = meter.snapshot().find((x) => x.name === 'switch' || x.name.endsWith('.switch'));
  if (!s) throw new Error(`no switch stage in ${meter.snapshot().map((x) => x.name).join(', ')}`);
  return s;
}

const test = testIf('root', 'netns', 'tun');

const TSO: Readonly<NetOffloads> = { ...NO_OFFLOADS, guestCsum: true, guestTso4: true, guestTso6: true, guestEcn: true };

function sourceScript(addr: string, port: number, bytes: number): string {
  return `const b=Buffer.alloc(1<<20);for(let i=0;i<b.length;i++)b[i]=(i*31+7)&255;let left=${bytes};
    const c=require('net').connect(${port},'${addr}',()=>{const go=()=>{while(left>0){const k=Math.min(left,b.length);left-=k;if(!c.write(b.subarray(0,k))){c.once('drain',go);return}}c.end()};go()});
    c.on('error',(e)=>{console.error(e.message);process.exit(1)});`;
}
function sinkScript(addr: string, port: number): string {
  return `const h=require('crypto').createHash('sha256');let n=0;
    require('net').createServer((c)=>{c.on('data',(d)=>{h.update(d);n+=d.length});c.on('end',()=>{console.log(n+' '+h.digest('hex'));process.exit(0)})}).listen(${port},'${addr}',()=>console.log('listening'));`;
}
function patternSha(bytes: number): string {
  const b = Buffer.alloc(1 << 20);
  for (let i = 0; i < b.length; i++) b[i] = (i * 31 + 7) & 255;
  const h = createHash('sha256');
  for (let left = bytes; left > 0; left -= b.length) h.update(b.subarray(0, Math.min(left, b.length)));
  return h.digest('hex');
}

/** Run a sink in `ns`, then the source in `fromNs` (null: host namespace); returns the sink's line. */
async function transfer(sb: Sandbox, sinkNs: string, addr: string, port: number, fromNs: string | null, bytes: number): Promise<string> {
  const sink = sb.spawn(sinkNs, [process.execPath, '-e', sinkScript(addr, port)]);
  let out = '';
  sink.stdout?.setEncoding('utf8');
  sink.stdout?.on('data', (d: string) => (out += d));
  for (let i = 0; i < 200 && !out.includes('listening'); i++) await new Promise((r) => setTimeout(r, 50));
  const src = await sb.exec(fromNs, [process.execPath, '-e', sourceScript(addr, port, bytes)], 90_000);
  if (src.code !== 0) throw new Error(`source failed: ${src.stderr}`);
  for (let i = 0; i < 600 && !/^\d+ [0-9a-f]{64}$/m.test(out); i++) await new Promise((r) => setTimeout(r, 50));
  return (/^\d+ [0-9a-f]{64}$/m.exec(out) ?? [''])[0];
}

async function guestKernel(sb: Sandbox, label: string, mac: string, cidr: string, gateway: string | null, meter: Meter): Promise<{ ns: string; port: NetnsTapPort }> {
  const ns = await sb.netns(label);
  const port = NetnsTapPort.open({ netns: ns, meter });
  sb.defer(() => port.close());
  await sb.must(['ip', '-n', ns, 'link', 'set', 'tap0', 'address', mac]);
  await sb.must(['ip', '-n', ns, 'addr', 'add', cidr, 'dev', 'tap0']);
  await sb.must(['ip', '-n', ns, 'link', 'set', 'tap0', 'up']);
  if (gateway) await sb.must(['ip', '-n', ns, 'route', 'add', 'default', 'via', gateway]);
  return { ns, port };
}

for (const mode of ['GSO ports', 'plain ports'] as const) {
  test.serial(`two guest kernels on a switch with a tap uplink (${mode}): ping each other and the host side, TCP between them and from the host`, async (t) => {
    await withSandbox(async (sb) =>
      withBridgedNet(
        async (bnet) => {
          const meter = new Meter();
          const sw = new Switch({ meter });
          sb.defer(() => sw.close());
          const tap = await bnet.openTap({ meter });
          sw.setUplink(tap, { name: 'uplink' });
          tap.follow(sw);
          const g1 = await guestKernel(sb, 'g1', '52:54:00:00:01:01', bnet.guestAddress(0), null, new Meter());
          const g2 = await guestKernel(sb, 'g2', '52:54:00:00:01:02', bnet.guestAddress(1), null, new Meter());
          const accepts = mode === 'GSO ports' ? TSO : undefined;
          const m1 = sw.attach(g1.port, { name: 'g1', accepts });
          const m2 = sw.attach(g2.port, { name: 'g2', accepts });
          t.is(sw.offloads.guestTso4, mode === 'GSO ports', 'the uplink gets what every member takes');
          t.is(tap.offload !== 0, mode === 'GSO ports');

          for (const [ns, to] of [
            [g1.ns, bnet.guestIp(1)],
            [g2.ns, bnet.guestIp(0)],
            [g1.ns, bnet.hostAddress],
            [g2.ns, bnet.hostAddress],
          ]) {
            const r = await sb.exec(ns, ['ping', '-c', '2', '-i', '0.2', '-W', '3', to]);
            t.is(r.code, 0, `${ns} → ${to}: ${r.stdout}${r.stderr}`);
          }
          t.is(sw.macs.size, 3, 'g1, g2 and the bridge learned');

          const uplinkBefore = sw.uplink!.stats().outFrames;
          const copiesBefore = switchStage(meter).bytesCopied;
          const BYTES = 32 << 20;
          t.is(await transfer(sb, g2.ns, bnet.guestIp(1), 7100, g1.ns, BYTES), `${BYTES} ${patternSha(BYTES)}`);
          const uplinkDuring = sw.uplink!.stats().outFrames - uplinkBefore;
          t.true(uplinkDuring < 50, `learned unicast is not flooded to the uplink (${uplinkDuring} frames went up)`);
          const copied = switchStage(meter).bytesCopied - copiesBefore;
          if (mode === 'GSO ports') t.is(copied, 0, 'super-frames crossed the switch without a copy');
          else t.true(copied >= BYTES, `segmented in software, metered (${copied} B copied)`);
          t.true(m1.stats().inBytes >= BYTES && m2.stats().outBytes >= BYTES);

          t.is(await transfer(sb, g1.ns, bnet.guestIp(0), 7101, bnet.netns, 8 << 20), `${8 << 20} ${patternSha(8 << 20)}`);
          t.log(JSON.stringify(sw.stats().map((s) => [s.name, s.inFrames, s.outFrames, s.flooded, s.drops])));
        },
        { httpFileBytes: 0, iperfServers: 0 },
      ),
    );
  });
}

test.serial('two guest kernels on a switch with the NAT stack as uplink: the gateway, a host server, and each other', async (t) => {
  await withSandbox(async (sb) => {
    const meter = new Meter();
    const sw = new Switch({ meter });
    sb.defer(() => sw.close());
    const stack = createNatStack({ meter });
    sw.setUplink(stack, { name: 'nat' });
    const g1 = await guestKernel(sb, 'n1', '52:54:00:00:02:01', '10.0.2.15/24', '10.0.2.2', new Meter());
    const g2 = await guestKernel(sb, 'n2', '52:54:00:00:02:02', '10.0.2.16/24', '10.0.2.2', new Meter());
    sw.attach(g1.port, { name: 'g1', accepts: TSO });
    sw.attach(g2.port, { name: 'g2', accepts: TSO });
    stack.setOffloads(sw.offloads.guestCsum, sw.offloads.guestTso4);
    await stack.ready;

    const got: string[] = [];
    const server = net.createServer((c) => {
      let n = 0;
      c.on('data', (d: Buffer) => (n += d.length));
      c.on('end', () => {
        got.push(`${c.remoteAddress} ${n}`);
        c.end('ok');
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    sb.defer(() => new Promise<void>((r) => server.close(() => r())));
    const port = (server.address() as AddressInfo).port;
    for (const g of [g1, g2]) {
      const ping = await sb.exec(g.ns, ['ping', '-c', '2', '-i', '0.2', '-W', '3', '10.0.2.2']);
      t.is(ping.code, 0, ping.stdout + ping.stderr);
      const r = await sb.exec(g.ns, [process.execPath, '-e', `const c=require('net').connect(${port},'10.0.2.2',()=>c.end(Buffer.alloc(1<<20)));c.on('data',(d)=>process.stdout.write(d));c.on('error',(e)=>{console.error(e.message);process.exit(1)})`], 30_000);
      t.is(r.stdout, 'ok', r.stderr);
    }
    t.is(got.length, 2);
    const each = await sb.exec(g1.ns, ['ping', '-c', '2', '-i', '0.2', '-W', '3', '10.0.2.16']);
    t.is(each.code, 0, each.stdout + each.stderr);
  });
});
