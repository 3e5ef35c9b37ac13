/**
 * Real test guests (TCG) in bridged mode on the bridged test network:
 *  - usernet's virtio-net over vhost-user + TapBackend: a static address on the bridge's subnet,
 *    ping to the host side, an HTTP fetch with the right sha256, iperf3 both ways; the guest's
 *    TSO negotiation reaches the tap (TUNSETOFFLOAD) and super-frames cross whole;
 *  - two guests through the switch (uplink: the tap): they ping each other and run iperf3
 *    between them, and both reach the host side;
 *  - QEMU's own rtl8139 over `-netdev stream` + usernet's tap backend.
 * The tap and the namespace are gone after every test.
 */
import { testIf } from '../helpers/env';
import { noBridgedNamespacesLeft, withBridgedNet } from '../helpers/bridged-net';
import { BridgedUsernet } from '../../src/vm/bridged-guest';
import { Meter, type StageSnapshot } from '../../src/meter/meter';
import { TUN_F_CSUM, TUN_F_TSO4 } from '../../src/native/constants';

/** The switch's meter stage, whatever the meter's naming scheme calls it ('switch', 'link.switch'). */
function switchStage(meter: Meter): StageSnapshot {
  const s = meter.snapshot().find((x) => x.name === 'switch' || x.name.endsWith('.switch'));
  if (!s) throw new Error(`no switch stage in ${meter.snapshot().map((x) => x.name).join(', ')}`);
  return s;
}

const vmTest = testIf('root', 'qemu', 'tun', 'netns');

function facts(output: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of output.split('\n')) {
    const m = /^(\w+)=(.*)$/.exec(line.trim());
    if (m) out[m[1]] = m[2];
  }
  return out;
}

/** Shell that prints `name=<Mbit/s>` from an iperf3 client run (receiver side). */
function iperfCmd(name: string, host: string, args: string): string {
  return `r=$(iperf3 -c ${host} ${args} -f m 2>&1); echo "$r" | tail -4 >&2; echo ${name}=$(echo "$r" | awk '/receiver/ {print $(NF-2)}')`;
}

vmTest.serial('virtio over vhost-user + tap: static address, ping the host side, HTTP fetch with sha256, iperf3 both ways', async (t) => {
  await withBridgedNet(async (net) => {
    const meter = new Meter();
    const usernet = await BridgedUsernet.start({ network: net, meter });
    t.teardown(() => usernet.close());
    const http = net.http!;
    const host = net.hostAddress;
    const r = await usernet.runGuest({
      command: [
        "echo addr=$(ip -4 -o addr show eth0 | awk '{print $4}')",
        `ping -c 2 -W 5 ${host} >/dev/null && echo ping=ok`,
        `wget -q -O /tmp/blob ${http.url} && echo sha256=$(sha256sum /tmp/blob | cut -d' ' -f1)`,
        iperfCmd('up', host, `-p ${net.iperfPorts[0]} -t 3`),
        iperfCmd('down', host, `-p ${net.iperfPorts[0]} -t 3 -R`),
      ].join('\n'),
      timeoutMs: 240_000,
      console: true,
    });
    t.log(r.output.trim());
    t.is(r.exitCode, 0, r.output);
    const f = facts(r.output);
    t.is(f.addr, net.guestAddress(0));
    t.is(r.guestAddress, '10.0.3.10/24');
    t.is(r.hostAddress, '10.0.3.1');
    t.is(f.ping, 'ok');
    t.is(f.sha256, http.sha256);
    t.true(Number(f.up) > 0, `guest→host ${f.up} Mbit/s`);
    t.true(Number(f.down) > 0, `host→guest ${f.down} Mbit/s`);
    // the guest negotiated GUEST_CSUM/GUEST_TSO4: the tap was told, and TSO frames crossed whole
    t.is(usernet.tap.offload & (TUN_F_CSUM | TUN_F_TSO4), TUN_F_CSUM | TUN_F_TSO4);
    const w = meter.stage('tap.write').snapshot();
    const rd = meter.stage('tap.read').snapshot();
    t.true(w.bytes / w.frames > 3000, `guest TSO frames reach the kernel whole (${w.frames} writes, ${w.bytes} B)`);
    t.true(rd.bytes / rd.frames > 3000, `the kernel's GSO frames reach the guest whole (${rd.frames} reads, ${rd.bytes} B)`);
    t.is(w.drops, 0);
    t.log(`tap.write ${w.frames} frames ${w.bytes} B; tap.read ${rd.frames} frames ${rd.bytes} B; guest.rx drops ${meter.stage('guest.rx').drops}`);
    await usernet.close();
    t.not((await net.exec(['ip', 'link', 'show', usernet.tap.ifName])).code, 0, 'the tap is gone');
  });
  t.true(await noBridgedNamespacesLeft(), 'the namespace is gone');
});

vmTest.serial('two guests through the switch: they ping each other and the host side, and run iperf3 between them', async (t) => {
  await withBridgedNet(
    async (net) => {
      const meter = new Meter();
      const usernet = await BridgedUsernet.start({ network: net, meter, switched: true });
      t.teardown(() => usernet.close());
      const a = net.guestIp(0);
      const b = net.guestIp(1);
      const host = net.hostAddress;
      const waitFor = (ip: string): string => `n=0; until ping -c 1 -W 1 ${ip} >/dev/null 2>&1; do n=$((n+1)); [ $n -gt 120 ] && break; done`;
      const retry = (cmd: string): string => `n=0; until ${cmd}; do n=$((n+1)); [ $n -gt 30 ] && break; sleep 1; done`;
      const server = usernet.runGuest({
        index: 0,
        command: [
          waitFor(b),
          `ping -c 2 -W 5 ${b} >/dev/null && echo ping_peer=ok`,
          `ping -c 2 -W 5 ${host} >/dev/null && echo ping_host=ok`,
          'iperf3 -s -1 -p 5301 >/dev/null 2>&1; iperf3 -s -1 -p 5301 >/dev/null 2>&1; echo served=2',
        ].join('\n'),
        timeoutMs: 300_000,
      });
      const client = usernet.runGuest({
        index: 1,
        command: [
          waitFor(a),
          `ping -c 2 -W 5 ${a} >/dev/null && echo ping_peer=ok`,
          `ping -c 2 -W 5 ${host} >/dev/null && echo ping_host=ok`,
          retry(`iperf3 -c ${a} -p 5301 -t 3 -f m >/tmp/up 2>&1`),
          "echo up=$(awk '/receiver/ {print $(NF-2)}' /tmp/up)",
          retry(`iperf3 -c ${a} -p 5301 -t 3 -R -f m >/tmp/down 2>&1`),
          "echo down=$(awk '/receiver/ {print $(NF-2)}' /tmp/down)",
        ].join('\n'),
        timeoutMs: 300_000,
      });
      const [rs, rc] = await Promise.all([server, client]);
      t.log(`server: ${rs.output.trim()}\nclient: ${rc.output.trim()}`);
      const fs = facts(rs.output);
      const fc = facts(rc.output);
      t.is(fs.ping_peer, 'ok');
      t.is(fc.ping_peer, 'ok');
      t.is(fs.ping_host, 'ok');
      t.is(fc.ping_host, 'ok');
      t.is(fs.served, '2');
      t.true(Number(fc.up) > 0, `guest→guest ${fc.up} Mbit/s`);
      t.true(Number(fc.down) > 0, `guest←guest ${fc.down} Mbit/s`);
      const sw = usernet.switch!;
      const uplink = sw.uplink!.stats();
      const guests = usernet.members.map((m) => m.stats());
      t.log(JSON.stringify([uplink, ...guests]));
      t.is(guests.length, 2);
      const guestBytes = guests.reduce((n, s) => n + s.inBytes, 0);
      t.true(uplink.outBytes < guestBytes / 10, 'guest-to-guest unicast was not flooded to the tap');
      t.is(switchStage(meter).bytesCopied, 0, 'both guests take TSO: frames crossed the switch without a copy');
    },
    { httpFileBytes: 0, iperfServers: 0 },
  );
  t.true(await noBridgedNamespacesLeft());
});

vmTest.serial("QEMU's rtl8139 over -netdev stream + usernet's tap: ping, HTTP fetch with sha256, iperf3 both ways", async (t) => {
  await withBridgedNet(
    async (net) => {
      const meter = new Meter();
      const usernet = await BridgedUsernet.start({ network: net, meter });
      t.teardown(() => usernet.close());
      const host = net.hostAddress;
      const r = await usernet.runGuest({
        nic: 'qemu-rtl8139',
        command: [
          `ping -c 2 -W 5 ${host} >/dev/null && echo ping=ok`,
          `wget -q -O /tmp/blob ${net.http!.url} && echo sha256=$(sha256sum /tmp/blob | cut -d' ' -f1)`,
          iperfCmd('up', host, `-p ${net.iperfPorts[0]} -t 2`),
          iperfCmd('down', host, `-p ${net.iperfPorts[0]} -t 2 -R`),
        ].join('\n'),
        timeoutMs: 240_000,
      });
      t.log(r.output.trim());
      t.is(r.exitCode, 0, r.output);
      const f = facts(r.output);
      t.is(f.ping, 'ok');
      t.is(f.sha256, net.http!.sha256);
      t.true(Number(f.up) > 0 && Number(f.down) > 0, `${f.up} / ${f.down} Mbit/s`);
      t.is(usernet.tap.offload, 0, 'a plain NIC gets no offloads: the kernel segments and checksums');
      const stream = meter.snapshot().filter((x) => x.name.startsWith('qemu.stream'));
      t.true(stream.some((x) => x.frames > 0), `frames crossed the stream socket: ${JSON.stringify(stream.map((x) => [x.name, x.frames, x.drops]))}`);
    },
    { httpFileBytes: 1 << 20 },
  );
  t.true(await noBridgedNamespacesLeft());
});
