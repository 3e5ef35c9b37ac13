/**
 * The test guest's own Linux 8139cp driver on usernet's emulated RTL8139C+ (device 'rtl8139cp':
 * revision 0x20, C+ mode with descriptor rings in guest memory), through vfio-user (QEMU 11
 * `vfio-user-pci`, TCG, guest RAM a shared memfd), behind usernet's NAT: dmesg shows 8139cp bound
 * to usernet's device with its MAC; DHCP lease, ping to the gateway, a name resolved by
 * usernet's DNS, a 4 MiB HTTP fetch from the host with the right sha256, iperf3 both ways. The
 * per-frame cost (vfio-user messages, waits, interrupts, copies) and the offloads the guest used
 * (TSO super-frames, partial checksums) are logged from the meter. Bridged: the same device on
 * usernet's tap in the bridged test network (the tap takes partial checksums for it, TSO frames
 * from it go out with their vnet header): static address, ping, HTTP fetch with sha256, iperf3
 * both ways. Throughput is logged, never asserted.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bridgeToTap } from '../../src/backends/tap';
import type { Rtl8139 } from '../../src/devices/rtl8139/device';
import { GSO_NONE, VNET_F_NEEDS_CSUM, type Frame } from '../../src/link/frame';
import type { Port } from '../../src/link/port';
import { Meter } from '../../src/meter/meter';
import { listenVfioUser, vfioUserQemuArgs, type VfioUserServer } from '../../src/transports/vfio-user';
import type { VfioUserConnection } from '../../src/transports/vfio-user-connection';
import { haveQemu, runGuest } from '../../src/vm';
import { noBridgedNamespacesLeft, withBridgedNet } from '../helpers/bridged-net';
import { testIf } from '../helpers/env';
import { checkCommand, fileServer, natBehind, parseFacts } from './vhost-user-rig';

const base = testIf('root', 'qemu', 'cmd:iperf3');
const vmTest = haveQemu('v11') ? base : test_skip('needs QEMU 11 in build/qemu11 (make qemu11)');
const bridgedTest = haveQemu('v11') ? testIf('root', 'qemu', 'tun', 'netns', 'cmd:iperf3') : test_skip('needs QEMU 11 in build/qemu11 (make qemu11)');

function test_skip(reason: string): typeof base {
  const skipping = ((title: string, ...rest: unknown[]) =>
    (base.skip as (t: string, ...r: unknown[]) => void)(`${title} (skipped: ${reason})`, ...rest)) as unknown as typeof base;
  return Object.assign(skipping, base, { serial: skipping });
}

const MAC = '52:54:00:81:39:02';

const DRIVER_FACTS = [
  "echo driver=$(basename $(readlink /sys/class/net/eth0/device/driver))",
  "echo bound=$(dmesg | grep -c '8139cp .*eth0: RTL-8139C+ at .*, 52:54:00:81:39:02')",
  "echo mac=$(cat /sys/class/net/eth0/address)",
  "echo revision=$(cat /sys/class/net/eth0/device/revision)",
].join('\n');

/** Shell printing `name=<Mbit/s>` (receiver side) from an iperf3 client run. */
function iperfCmd(name: string, host: string, args: string): string {
  return `r=$(iperf3 -c ${host} ${args} -f m 2>&1); echo "$r" | tail -4 >&2; echo ${name}=$(echo "$r" | awk '/receiver/ {print $(NF-2)}')`;
}

/** An iperf3 server on 127.0.0.1, killed by PID at teardown. */
async function iperfServer(t: { teardown(f: () => void): void }, port: number): Promise<void> {
  const child = spawn('iperf3', ['-s', '-B', '127.0.0.1', '-p', String(port)], { stdio: 'ignore' });
  t.teardown(() => {
    if (child.pid !== undefined && child.exitCode === null) process.kill(child.pid, 'SIGKILL');
  });
  await new Promise((r) => setTimeout(r, 300));
}

/** Counts the offload metadata of frames the guest transmits, on their way to the NAT. */
function countOffloads(nic: Rtl8139): { gso: number; csum: number; maxFrame: number } {
  const seen = { gso: 0, csum: 0, maxFrame: 0 };
  const port = nic as Port;
  const onReceive = port.onReceive.bind(port);
  port.onReceive = (h) =>
    onReceive((frames: readonly Frame[]) => {
      for (const f of frames) {
        if (f.gsoType !== GSO_NONE) seen.gso++;
        else if (f.flags & VNET_F_NEEDS_CSUM) seen.csum++;
        if (f.data.length > seen.maxFrame) seen.maxFrame = f.data.length;
      }
      h(frames);
    });
  return seen;
}

function perFrame(meter: Meter): string {
  const get = (n: string) => meter.stage(n).snapshot();
  const tx = get('guest.tx');
  const rx = get('guest.rx');
  const msg = get('vfio-user.msg');
  const wait = get('vfio-user.wait');
  const irq = get('vfio-user.irq');
  const dma = get('device.dma');
  const frames = tx.frames + rx.frames;
  return (
    `guest.tx ${tx.frames} frames ${tx.bytes} B, guest.rx ${rx.frames} frames ${rx.bytes} B; ` +
    `vfio-user messages ${msg.frames} (${(msg.frames / frames).toFixed(2)}/frame), vCPU waits ${wait.frames} (${(wait.frames / frames).toFixed(2)}/frame), ` +
    `interrupts ${irq.frames} (${(irq.frames / frames).toFixed(2)}/frame), DMA copies ${dma.copies} (${dma.bytesCopied} B); ` +
    `drops tx ${JSON.stringify(tx.dropReasons)} rx ${JSON.stringify(rx.dropReasons)}`
  );
}

async function usernet(t: { teardown(f: () => Promise<void> | void): void }, meter: Meter): Promise<{ server: VfioUserServer; path: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'usernet-vm-rtlcp-'));
  const path = join(dir, 'rtl8139cp.sock');
  const server = await listenVfioUser({ path, meter, device: 'rtl8139cp', rtl8139: { mac: MAC } });
  t.teardown(async () => {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return { server, path };
}

vmTest.serial('RTL8139C+ over vfio-user + NAT: 8139cp binds, DHCP, ping, DNS, HTTP fetch with sha256, iperf3 both ways', async (t) => {
  const meter = new Meter();
  const files = await fileServer();
  t.teardown(() => files.close());
  const port = 15800 + (process.pid % 500);
  await iperfServer(t, port);
  const { server, path } = await usernet(t, meter);
  const conns: VfioUserConnection[] = [];
  let offloads = { gso: 0, csum: 0, maxFrame: 0 };
  server.on('guest', (nic: Rtl8139, conn: VfioUserConnection) => {
    conns.push(conn);
    offloads = countOffloads(nic);
    void natBehind(nic, meter);
  });
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
    timeoutMs: 120_000,
    console: true,
  });
  t.log(r.output.trim());
  t.is(r.exitCode, 0, r.output + r.stderr);
  const f = parseFacts(r.output);
  t.is(f.driver, '8139cp');
  t.is(f.bound, '1', "dmesg: 'eth0: RTL-8139C+ at …, <our MAC>'");
  t.is(f.mac, MAC);
  t.is(f.revision, '0x20');
  t.is(f.addr, '10.0.2.15/24');
  t.is(f.ping, 'ok');
  t.is(f.resolved, '10.0.2.2');
  t.is(f.sha256, files.sha256);
  t.true(Number(f.up) > 0, `guest→host ${f.up} Mbit/s`);
  t.true(Number(f.down) > 0, `host→guest ${f.down} Mbit/s`);
  t.log(`iperf3 through NAT: guest→host ${f.up} Mbit/s, host→guest ${f.down} Mbit/s`);
  t.log(`frames from the guest: ${offloads.gso} TSO super-frames, ${offloads.csum} with a partial checksum, largest ${offloads.maxFrame} B`);
  t.log(perFrame(meter));
  t.log(`vfio-user: ${JSON.stringify(conns[0]?.stats)} irqs ${JSON.stringify(conns[0]?.irqs.counters)}`);
});

bridgedTest.serial('RTL8139C+ over vfio-user + tap (bridged): static address, ping the host side, HTTP fetch with sha256, iperf3 both ways', async (t) => {
  await withBridgedNet(async (net) => {
    const meter = new Meter();
    const tap = await net.openTap({ meter });
    t.teardown(() => tap.close());
    const { server, path } = await usernet(t, meter);
    let offloads = { gso: 0, csum: 0, maxFrame: 0 };
    server.on('guest', (nic: Rtl8139) => {
      offloads = countOffloads(nic);
      bridgeToTap(nic, tap);
    });
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
      timeoutMs: 120_000,
      console: true,
    });
    t.log(r.output.trim());
    t.is(r.exitCode, 0, r.output);
    const f = parseFacts(r.output);
    t.is(f.driver, '8139cp');
    t.is(f.addr, net.guestAddress(0));
    t.is(f.ping, 'ok');
    t.is(f.sha256, http.sha256);
    t.true(Number(f.up) > 0, `guest→host ${f.up} Mbit/s`);
    t.true(Number(f.down) > 0, `host→guest ${f.down} Mbit/s`);
    t.log(`iperf3 bridged: guest→host ${f.up} Mbit/s, host→guest ${f.down} Mbit/s`);
    t.log(`frames from the guest: ${offloads.gso} TSO super-frames, ${offloads.csum} with a partial checksum, largest ${offloads.maxFrame} B`);
    t.log(perFrame(meter));
    t.is(tap.offload & 1, 1, 'the C+ device completes checksums: the tap asks for TUN_F_CSUM');
  });
  t.true(await noBridgedNamespacesLeft(), 'the namespace is gone');
});
