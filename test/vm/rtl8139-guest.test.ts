/**
 * The test guest's own Linux 8139too driver on usernet's emulated RTL8139, through vfio-user
 * (QEMU 11 `vfio-user-pci`, TCG, guest RAM a shared memfd):
 *  - NAT: dmesg shows 8139too bound to usernet's device with its MAC; DHCP lease, ping to the
 *    gateway, a name resolved by usernet's DNS, a 4 MiB HTTP fetch from the host with the right
 *    sha256, iperf3 both ways; the per-frame cost (vfio-user messages, interrupts, copies) is
 *    logged from the meter;
 *  - bridged: the same device on usernet's tap in the bridged test network: static address,
 *    ping, HTTP fetch with sha256, iperf3 both ways.
 * Throughput is logged, never asserted.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bridgeToTap } from '../../src/backends/tap';
import type { Rtl8139 } from '../../src/devices/rtl8139/device';
import { Meter } from '../../src/meter/meter';
import { listenVfioUser, vfioUserQemuArgs, type VfioUserServer } from '../../src/transports/vfio-user';
import type { VfioUserConnection } from '../../src/transports/vfio-user-connection';
import { haveQemu, runGuest } from '../../src/vm';
import { testIf } from '../helpers/env';
import { noBridgedNamespacesLeft, withBridgedNet } from '../helpers/bridged-net';
import { checkCommand, fileServer, natBehind, parseFacts } from './vhost-user-rig';

const base = testIf('root', 'qemu', 'cmd:iperf3');
const vmTest = haveQemu('v11') ? base : test_skip('needs QEMU 11 in build/qemu11 (make qemu11)');
const bridgedTest = haveQemu('v11') ? testIf('root', 'qemu', 'tun', 'netns', 'cmd:iperf3') : test_skip('needs QEMU 11 in build/qemu11 (make qemu11)');

function test_skip(reason: string): typeof base {
  const skipping = ((title: string, ...rest: unknown[]) =>
    (base.skip as (t: string, ...r: unknown[]) => void)(`${title} (skipped: ${reason})`, ...rest)) as unknown as typeof base;
  return Object.assign(skipping, base, { serial: skipping });
}

const MAC = '52:54:00:81:39:01';

async function usernet(t: { teardown(f: () => Promise<void> | void): void }, meter: Meter): Promise<{ server: VfioUserServer; path: string; conns: VfioUserConnection[] }> {
  const dir = mkdtempSync(join(tmpdir(), 'usernet-vm-rtl-'));
  const path = join(dir, 'rtl8139.sock');
  const server = await listenVfioUser({ path, meter, rtl8139: { mac: MAC } });
  const conns: VfioUserConnection[] = [];
  server.on('guest', (_nic: Rtl8139, conn: VfioUserConnection) => conns.push(conn));
  t.teardown(async () => {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return { server, path, conns };
}

/** An iperf3 server on 127.0.0.1, killed by PID at teardown. */
async function iperfServer(t: { teardown(f: () => void): void }, port: number): Promise<void> {
  const child = spawn('iperf3', ['-s', '-B', '127.0.0.1', '-p', String(port)], { stdio: 'ignore' });
  t.teardown(() => {
    if (child.pid !== undefined && child.exitCode === null) process.kill(child.pid, 'SIGKILL');
  });
  await new Promise((r) => setTimeout(r, 300));
}

/** Shell printing `name=<Mbit/s>` (receiver side) from an iperf3 client run. */
function iperfCmd(name: string, host: string, args: string): string {
  return `r=$(iperf3 -c ${host} ${args} -f m 2>&1); echo "$r" | tail -4 >&2; echo ${name}=$(echo "$r" | awk '/receiver/ {print $(NF-2)}')`;
}

const DRIVER_FACTS = [
  "echo driver=$(basename $(readlink /sys/class/net/eth0/device/driver))",
  "echo bound=$(dmesg | grep -c '8139too .*eth0: RealTek RTL8139 at .*, 52:54:00:81:39:01')",
  "echo mac=$(cat /sys/class/net/eth0/address)",
  "echo revision=$(cat /sys/class/net/eth0/device/revision)",
].join('\n');

function perFrame(meter: Meter): string {
  const get = (n: string) => meter.stage(n).snapshot();
  const tx = get('guest.tx');
  const rx = get('guest.rx');
  const msg = get('vfio-user.msg');
  const irq = get('vfio-user.irq');
  const dma = get('device.dma');
  const fifo = get('device.fifo');
  const frames = tx.frames + rx.frames;
  return (
    `guest.tx ${tx.frames} frames ${tx.bytes} B, guest.rx ${rx.frames} frames ${rx.bytes} B; ` +
    `vfio-user messages ${msg.frames} (${(msg.frames / frames).toFixed(2)}/frame), interrupts ${irq.frames} (${(irq.frames / frames).toFixed(2)}/frame), ` +
    `copies in the device: ${(dma.copies / Math.max(1, rx.frames)).toFixed(2)} DMA + ${(fifo.copies / Math.max(1, rx.frames)).toFixed(2)} FIFO per received frame, none per transmitted frame (views); ` +
    `drops tx ${JSON.stringify(tx.dropReasons)} rx ${JSON.stringify(rx.dropReasons)}`
  );
}

vmTest.serial('RTL8139 over vfio-user + NAT: 8139too binds, DHCP, ping, DNS, HTTP fetch with sha256, iperf3 both ways', async (t) => {
  const meter = new Meter();
  const files = await fileServer();
  t.teardown(() => files.close());
  const port = 15300 + (process.pid % 500);
  await iperfServer(t, port);
  const { server, path, conns } = await usernet(t, meter);
  server.on('guest', (nic: Rtl8139) => void natBehind(nic, meter));
  const r = await runGuest({
    qemu: 'v11',
    memfd: true,
    network: vfioUserQemuArgs(path),
    command: [
      DRIVER_FACTS,
      checkCommand(files.port),
      iperfCmd('up', '10.0.2.2', `-p ${port} -t 3`),
      iperfCmd('down', '10.0.2.2', `-p ${port} -t 3 -R`),
    ].join('\n'),
    timeoutMs: 300_000,
    console: true,
  });
  t.log(r.output.trim());
  t.is(r.exitCode, 0, r.output + r.stderr);
  const f = parseFacts(r.output);
  t.is(f.driver, '8139too');
  t.is(f.bound, '1', "dmesg: 'eth0: RealTek RTL8139 at …, <our MAC>'");
  t.is(f.mac, MAC);
  t.is(f.revision, '0x10');
  t.is(f.addr, '10.0.2.15/24');
  t.is(f.ping, 'ok');
  t.is(f.resolved, '10.0.2.2');
  t.is(f.sha256, files.sha256);
  t.true(Number(f.up) > 0, `guest→host ${f.up} Mbit/s`);
  t.true(Number(f.down) > 0, `host→guest ${f.down} Mbit/s`);
  t.log(`iperf3 through NAT: guest→host ${f.up} Mbit/s, host→guest ${f.down} Mbit/s`);
  t.log(perFrame(meter));
  t.log(`vfio-user: ${JSON.stringify(conns[0]?.stats)} irqs ${JSON.stringify(conns[0]?.irqs.counters)}`);
  t.is(meter.stage('guest.rx').snapshot().dropReasons['rx-frame-over-1536'] ?? 0, 0);
});

bridgedTest.serial('RTL8139 over vfio-user + tap (bridged): static address, ping the host side, HTTP fetch with sha256, iperf3 both ways', async (t) => {
  await withBridgedNet(async (net) => {
    const meter = new Meter();
    const tap = await net.openTap({ meter });
    t.teardown(() => tap.close());
    const { server, path } = await usernet(t, meter);
    server.on('guest', (nic: Rtl8139) => bridgeToTap(nic, tap));
    const http = net.http!;
    const host = net.hostAddress;
    const r = await runGuest({
      qemu: 'v11',
      memfd: true,
      network: vfioUserQemuArgs(path),
      net: { ip: net.guestAddress(0) },
      command: [
        DRIVER_FACTS,
        "echo addr=$(ip -4 -o addr show eth0 | awk '{print $4}')",
        `ping -c 2 -W 5 ${host} >/dev/null && echo ping=ok`,
        `wget -q -O /tmp/blob ${http.url} && echo sha256=$(sha256sum /tmp/blob | cut -d' ' -f1)`,
        iperfCmd('up', host, `-p ${net.iperfPorts[0]} -t 3`),
        iperfCmd('down', host, `-p ${net.iperfPorts[0]} -t 3 -R`),
      ].join('\n'),
      timeoutMs: 300_000,
      console: true,
    });
    t.log(r.output.trim());
    t.is(r.exitCode, 0, r.output);
    const f = parseFacts(r.output);
    t.is(f.driver, '8139too');
    t.is(f.addr, net.guestAddress(0));
    t.is(f.ping, 'ok');
    t.is(f.sha256, http.sha256);
    t.true(Number(f.up) > 0, `guest→host ${f.up} Mbit/s`);
    t.true(Number(f.down) > 0, `host→guest ${f.down} Mbit/s`);
    t.log(`iperf3 bridged: guest→host ${f.up} Mbit/s, host→guest ${f.down} Mbit/s`);
    t.log(perFrame(meter));
    t.is(tap.offload, 0, 'an RTL8139 takes no offloads: the kernel segments and checksums for it');
  });
  t.true(await noBridgedNamespacesLeft(), 'the namespace is gone');
});
