/**
 * The test guest's own Linux 8139too driver on usernet's emulated RTL8139, through vfio-user
 * (QEMU 11 `vfio-user-pci`, TCG, guest RAM a shared memfd; vfio-user-rig.ts runs the guest):
 *  - NAT: dmesg shows 8139too bound to usernet's device with its MAC; DHCP lease, ping to the
 *    gateway, a name resolved by usernet's DNS, a 4 MiB HTTP fetch from the host with the right
 *    sha256, iperf3 both ways; the per-frame cost (vfio-user messages, vCPU waits, interrupts,
 *    copies) is logged from the meter;
 *  - bridged: the same device on usernet's tap in the bridged test network: static address,
 *    ping, HTTP fetch with sha256, iperf3 both ways.
 * Throughput is logged, never asserted.
 */
import { noBridgedNamespacesLeft } from '../helpers/bridged-net';
import { bridgedTest, perFrame, runBehindNat, runBridged, vmTest, type RtlGuestSpec } from './vfio-user-rig';

const SPEC: RtlGuestSpec = { device: 'rtl8139', mac: '52:54:00:81:39:01', driver: '8139too', dmesgBanner: 'RealTek RTL8139' };

vmTest.serial('RTL8139 over vfio-user + NAT: 8139too binds, DHCP, ping, DNS, HTTP fetch with sha256, iperf3 both ways', async (t) => {
  const { result: r, facts: f, meter, conns, sha256 } = await runBehindNat(t, SPEC);
  t.log(r.output.trim());
  t.is(r.exitCode, 0, r.output + r.stderr);
  t.is(f.driver, '8139too');
  t.is(f.bound, '1', "dmesg: 'eth0: RealTek RTL8139 at …, <our MAC>'");
  t.is(f.mac, SPEC.mac);
  t.is(f.revision, '0x10');
  t.is(f.addr, '10.0.2.15/24');
  t.is(f.ping, 'ok');
  t.is(f.resolved, '10.0.2.2');
  t.is(f.sha256, sha256);
  t.true(Number(f.up) > 0, `guest→host ${f.up} Mbit/s`);
  t.true(Number(f.down) > 0, `host→guest ${f.down} Mbit/s`);
  t.log(`iperf3 through NAT: guest→host ${f.up} Mbit/s, host→guest ${f.down} Mbit/s`);
  t.log(perFrame(meter));
  t.log(`vfio-user: ${JSON.stringify(conns[0]?.stats)} irqs ${JSON.stringify(conns[0]?.irqs.counters)}`);
  t.is(meter.stage('guest.rx').snapshot().dropReasons['rx-frame-over-1536'] ?? 0, 0);
});

bridgedTest.serial('RTL8139 over vfio-user + tap (bridged): static address, ping the host side, HTTP fetch with sha256, iperf3 both ways', async (t) => {
  await runBridged(t, SPEC, ({ result: r, facts: f, meter, sha256, guestAddress, tap }) => {
    t.log(r.output.trim());
    t.is(r.exitCode, 0, r.output);
    t.is(f.driver, '8139too');
    t.is(f.addr, guestAddress);
    t.is(f.ping, 'ok');
    t.is(f.sha256, sha256);
    t.true(Number(f.up) > 0, `guest→host ${f.up} Mbit/s`);
    t.true(Number(f.down) > 0, `host→guest ${f.down} Mbit/s`);
    t.log(`iperf3 bridged: guest→host ${f.up} Mbit/s, host→guest ${f.down} Mbit/s`);
    t.log(perFrame(meter));
    t.is(tap.offload, 0, 'an RTL8139 takes no offloads: the kernel segments and checksums for it');
  });
  t.true(await noBridgedNamespacesLeft(), 'the namespace is gone');
});
