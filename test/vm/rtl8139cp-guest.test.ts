/**
 * The test guest's own Linux 8139cp driver on usernet's emulated RTL8139C+ (device 'rtl8139cp':
 * revision 0x20, C+ mode with descriptor rings in guest memory), through vfio-user (QEMU 11
 * `vfio-user-pci`, TCG, guest RAM a shared memfd; vfio-user-rig.ts runs the guest), behind
 * usernet's NAT: dmesg shows 8139cp bound to usernet's device with its MAC; DHCP lease, ping to
 * the gateway, a name resolved by usernet's DNS, a 4 MiB HTTP fetch from the host with the right
 * sha256, iperf3 both ways. The per-frame cost (vfio-user messages, waits, interrupts, copies) and
 * the offloads the guest used (TSO super-frames, partial checksums) are logged from the meter.
 * Bridged: the same device on usernet's tap in the bridged test network (the tap takes partial
 * checksums for it, TSO frames from it go out with their vnet header): static address, ping,
 * HTTP fetch with sha256, iperf3 both ways. Throughput is logged, never asserted.
 */
import type { Rtl8139 } from '../../src/devices/rtl8139/device';
import { GSO_NONE, VNET_F_NEEDS_CSUM, type Frame } from '../../src/link/frame';
import type { Port } from '../../src/link/port';
import { noBridgedNamespacesLeft } from '../helpers/bridged-net';
import { bridgedTest, perFrame, runBehindNat, runBridged, vmTest, type RtlGuestSpec } from './vfio-user-rig';

interface OffloadsSeen {
  gso: number;
  csum: number;
  maxFrame: number;
}

/** A spec whose device's transmitted frames are watched for offload metadata on their way out. */
function specWatching(seen: OffloadsSeen): RtlGuestSpec {
  return {
    device: 'rtl8139cp',
    mac: '52:54:00:81:39:02',
    driver: '8139cp',
    dmesgBanner: 'RTL-8139C+', // grep's basic regex: + is literal
    onNic: (nic: Rtl8139) => {
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
    },
  };
}

const describe = (s: OffloadsSeen): string => `frames from the guest: ${s.gso} TSO super-frames, ${s.csum} with a partial checksum, largest ${s.maxFrame} B`;

vmTest.serial('RTL8139C+ over vfio-user + NAT: 8139cp binds, DHCP, ping, DNS, HTTP fetch with sha256, iperf3 both ways', async (t) => {
  const seen = { gso: 0, csum: 0, maxFrame: 0 };
  const spec = specWatching(seen);
  const { result: r, facts: f, meter, conns, sha256 } = await runBehindNat(t, spec);
  t.log(r.output.trim());
  t.is(r.exitCode, 0, r.output + r.stderr);
  t.is(f.driver, '8139cp');
  t.is(f.bound, '1', "dmesg: 'eth0: RTL-8139C+ at …, <our MAC>'");
  t.is(f.mac, spec.mac);
  t.is(f.revision, '0x20');
  t.is(f.addr, '10.0.2.15/24');
  t.is(f.ping, 'ok');
  t.is(f.resolved, '10.0.2.2');
  t.is(f.sha256, sha256);
  t.true(Number(f.up) > 0, `guest→host ${f.up} Mbit/s`);
  t.true(Number(f.down) > 0, `host→guest ${f.down} Mbit/s`);
  t.log(`iperf3 through NAT: guest→host ${f.up} Mbit/s, host→guest ${f.down} Mbit/s`);
  t.log(describe(seen));
  t.log(perFrame(meter));
  t.log(`vfio-user: ${JSON.stringify(conns[0]?.stats)} irqs ${JSON.stringify(conns[0]?.irqs.counters)}`);
});

bridgedTest.serial('RTL8139C+ over vfio-user + tap (bridged): static address, ping the host side, HTTP fetch with sha256, iperf3 both ways', async (t) => {
  const seen = { gso: 0, csum: 0, maxFrame: 0 };
  await runBridged(t, specWatching(seen), ({ result: r, facts: f, meter, sha256, guestAddress, tap }) => {
    t.log(r.output.trim());
    t.is(r.exitCode, 0, r.output);
    t.is(f.driver, '8139cp');
    t.is(f.addr, guestAddress);
    t.is(f.ping, 'ok');
    t.is(f.sha256, sha256);
    t.true(Number(f.up) > 0, `guest→host ${f.up} Mbit/s`);
    t.true(Number(f.down) > 0, `host→guest ${f.down} Mbit/s`);
    t.log(`iperf3 bridged: guest→host ${f.up} Mbit/s, host→guest ${f.down} Mbit/s`);
    t.log(describe(seen));
    t.log(perFrame(meter));
    t.is(tap.offload & 1, 1, 'the C+ device completes checksums: the tap asks for TUN_F_CSUM');
  });
  t.true(await noBridgedNamespacesLeft(), 'the namespace is gone');
});
