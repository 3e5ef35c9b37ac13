/**
 * Shared by the VM tests of usernet's RTL8139 over vfio-user (8139too: rtl8139-guest.test.ts,
 * the RTL8139C+ with 8139cp: rtl8139cp-guest.test.ts): the test selectors (QEMU 11 needed), the
 * guest runs — behind the NAT (DHCP, ping, DNS, HTTP fetch, iperf3 both ways) and on the bridged
 * test network's tap (static address, ping, HTTP, iperf3) — and the per-frame summary from the
 * meter. Each test asserts what is particular to its driver.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bridgeToTap, type TapBackend } from '../../src/backends/tap';
import type { Rtl8139 } from '../../src/devices/rtl8139/device';
import { Meter } from '../../src/meter/meter';
import { listenVfioUser, vfioUserQemuArgs, type VfioUserDeviceKind } from '../../src/transports/vfio-user';
import type { VfioUserConnection } from '../../src/transports/vfio-user-connection';
import { haveQemu, runGuest, type GuestResult } from '../../src/vm';
import { withBridgedNet } from '../helpers/bridged-net';
import { testIf } from '../helpers/env';
import { startIperf3Server } from '../helpers/host-servers';
import { checkCommand, fileServer, natBehind, parseFacts } from './vhost-user-rig';

const base = testIf('root', 'qemu', 'cmd:iperf3');
const NO_QEMU11 = 'needs QEMU 11 in build/qemu11 (make qemu11)';

function skipping(reason: string): typeof base {
  const skip = ((title: string, ...rest: unknown[]) =>
    (base.skip as (t: string, ...r: unknown[]) => void)(`${title} (skipped: ${reason})`, ...rest)) as unknown as typeof base;
  return Object.assign(skip, base, { serial: skip });
}

export const vmTest = haveQemu('v11') ? base : skipping(NO_QEMU11);
export const bridgedTest = haveQemu('v11') ? testIf('root', 'qemu', 'tun', 'netns', 'cmd:iperf3') : skipping(NO_QEMU11);

type Teardown = { teardown(f: () => Promise<void> | void): void };

export interface RtlRun {
  result: GuestResult;
  facts: Record<string, string>;
  meter: Meter;
  conns: VfioUserConnection[];
}

/** The guest facts every run prints: the driver bound to eth0, its dmesg line, MAC, revision. */
function driverFacts(driver: string, dmesgBanner: string, mac: string): string {
  return [
    'echo driver=$(basename $(readlink /sys/class/net/eth0/device/driver))',
    `echo bound=$(dmesg | grep -c '${driver} .*eth0: ${dmesgBanner} at .*, ${mac}')`,
    'echo mac=$(cat /sys/class/net/eth0/address)',
    'echo revision=$(cat /sys/class/net/eth0/device/revision)',
  ].join('\n');
}

/** Shell printing `name=<Mbit/s>` (receiver side) from an iperf3 client run. */
function iperfCmd(name: string, host: string, args: string): string {
  return `r=$(iperf3 -c ${host} ${args} -f m 2>&1); echo "$r" | tail -4 >&2; echo ${name}=$(echo "$r" | awk '/receiver/ {print $(NF-2)}')`;
}

export interface RtlGuestSpec {
  device: VfioUserDeviceKind;
  mac: string;
  /** The driver's name and its probe banner in dmesg ('8139too', 'RealTek RTL8139'). */
  driver: string;
  dmesgBanner: string;
  /** Called with each device as QEMU connects (e.g. to watch its frames). */
  onNic?: (nic: Rtl8139) => void;
}

async function serve(t: Teardown, spec: RtlGuestSpec, meter: Meter, attach: (nic: Rtl8139) => void): Promise<{ path: string; conns: VfioUserConnection[] }> {
  const dir = mkdtempSync(join(tmpdir(), `usernet-vm-${spec.device}-`));
  const path = join(dir, `${spec.device}.sock`);
  const server = await listenVfioUser({ path, meter, device: spec.device, rtl8139: { mac: spec.mac } });
  const conns: VfioUserConnection[] = [];
  server.on('guest', (nic: Rtl8139, conn: VfioUserConnection) => {
    conns.push(conn);
    spec.onNic?.(nic);
    attach(nic);
  });
  t.teardown(async () => {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return { path, conns };
}

/** The guest behind usernet's NAT: facts, DHCP, ping, DNS, a 4 MiB HTTP fetch, iperf3 both ways. */
export async function runBehindNat(t: Teardown, spec: RtlGuestSpec): Promise<RtlRun & { sha256: string }> {
  const meter = new Meter();
  const files = await fileServer();
  t.teardown(() => files.close());
  const iperf = await startIperf3Server();
  t.teardown(() => iperf.close());
  const { path, conns } = await serve(t, spec, meter, (nic) => void natBehind(nic, meter));
  const result = await runGuest({
    qemu: 'v11',
    memfd: true,
    network: vfioUserQemuArgs(path),
    command: [
      driverFacts(spec.driver, spec.dmesgBanner, spec.mac),
      checkCommand(files.port),
      iperfCmd('up', '10.0.2.2', `-p ${iperf.port} -t 3`),
      iperfCmd('down', '10.0.2.2', `-p ${iperf.port} -t 3 -R`),
    ].join('\n'),
    timeoutMs: 300_000,
    console: true,
  });
  return { result, facts: parseFacts(result.output), meter, conns, sha256: files.sha256 };
}

/** The guest on usernet's tap in the bridged test network: static address, ping, HTTP, iperf3. */
export async function runBridged(t: Teardown, spec: RtlGuestSpec, check: (run: RtlRun & { sha256: string; guestAddress: string; tap: TapBackend }) => void): Promise<void> {
  await withBridgedNet(async (net) => {
    const meter = new Meter();
    const tap = await net.openTap({ meter });
    t.teardown(() => tap.close());
    const { path, conns } = await serve(t, spec, meter, (nic) => bridgeToTap(nic, tap));
    const http = net.http!;
    const host = net.hostAddress;
    const result = await runGuest({
      qemu: 'v11',
      memfd: true,
      network: vfioUserQemuArgs(path),
      net: { ip: net.guestAddress(0) },
      command: [
        driverFacts(spec.driver, spec.dmesgBanner, spec.mac),
        "echo addr=$(ip -4 -o addr show eth0 | awk '{print $4}')",
        `ping -c 2 -W 5 ${host} >/dev/null && echo ping=ok`,
        `wget -q -O /tmp/blob ${http.url} && echo sha256=$(sha256sum /tmp/blob | cut -d' ' -f1)`,
        iperfCmd('up', host, `-p ${net.iperfPorts[0]} -t 3`),
        iperfCmd('down', host, `-p ${net.iperfPorts[0]} -t 3 -R`),
      ].join('\n'),
      timeoutMs: 300_000,
      console: true,
    });
    check({ result, facts: parseFacts(result.output), meter, conns, sha256: http.sha256, guestAddress: net.guestAddress(0), tap });
  });
}

/** Frames each way and, per frame, vfio-user messages, vCPU waits, interrupts, device copies. */
export function perFrame(meter: Meter): string {
  const get = (n: string) => meter.stage(n).snapshot();
  const tx = get('guest.tx');
  const rx = get('guest.rx');
  const msg = get('vfio-user.msg');
  const wait = get('vfio-user.wait');
  const irq = get('vfio-user.irq');
  const dma = get('device.dma');
  const fifo = get('device.fifo');
  const frames = Math.max(1, tx.frames + rx.frames);
  const per = (n: number): string => (n / frames).toFixed(2);
  const perRx = (n: number): string => (n / Math.max(1, rx.frames)).toFixed(2);
  return (
    `guest.tx ${tx.frames} frames ${tx.bytes} B, guest.rx ${rx.frames} frames ${rx.bytes} B; per frame: vfio-user messages ${per(msg.frames)}, ` +
    `vCPU waits ${per(wait.frames)}, interrupts ${per(irq.frames)}; copies per received frame: ${perRx(dma.copies)} DMA + ${perRx(fifo.copies)} FIFO; ` +
    `drops tx ${JSON.stringify(tx.dropReasons)} rx ${JSON.stringify(rx.dropReasons)}`
  );
}
