/**
 * ICMP echo through usernet, answered for real (never forged): `ping -c 3 10.0.2.2` from the
 * guest namespace reaches the loopback of the namespace usernet runs in.
 *
 * Both of usernet's paths are exercised without touching the real host's sysctls: usernet runs
 * inside a "host" namespace made by the test, whose `net.ipv4.ping_group_range` is per
 * namespace. With "0 2147483647" root may open ping sockets (SOCK_DGRAM/IPPROTO_ICMP) and
 * usernet uses them; with "1 0" (the kernel default: nobody) ping sockets fail with EACCES and
 * usernet falls back to a raw socket (it is root). Which path served the echo is read from the
 * meter, through the control socket.
 */
import { testIf } from '../helpers/env';
import { withSandbox } from '../helpers/netns';
import { startNatGuest } from '../helpers/nat-guest';

const test = testIf('root', 'netns', 'tun', 'cmd:ping');

interface Stage {
  name: string;
  frames: number;
}

for (const [label, range, kind] of [
  ['ping socket', '0 2147483647', 'ping'],
  ['raw socket', '1 0', 'raw'],
] as const) {
  test(`ping -c 3 10.0.2.2 is answered for real through the ${label} path`, async (t) => {
    await withSandbox(async (sb) => {
      const host = await sb.netns('host');
      await sb.must(['sysctl', '-q', '-w', `net.ipv4.ping_group_range=${range}`], host);
      const g = await startNatGuest(sb, { hostNetns: host });
      const r = await g.exec(['ping', '-c', '3', '-W', '5', '-i', '0.3', '10.0.2.2'], 60_000);
      t.is(r.code, 0, r.stdout + r.stderr);
      t.regex(r.stdout, /3 packets transmitted, 3 received/);
      // a real reply from the kernel of the "host" carries that kernel's TTL (64), less the hop
      t.regex(r.stdout, /ttl=6[34]/);
      const stats = (await g.ctl({ cmd: 'stats' })) as { stages: Stage[]; nat: { icmpSocket: string | null } };
      t.log(`icmp stages: ${stats.stages.filter((s) => s.name.includes('icmp')).map((s) => `${s.name}=${s.frames}`).join(' ')}`);
      t.is(stats.nat.icmpSocket, kind, `usernet reports the ${label} path`);
      // an address nobody answers: no reply may be forged
      const silent = await g.exec(['ping', '-c', '2', '-W', '1', '-i', '0.3', '192.0.2.1'], 30_000);
      t.not(silent.code, 0);
      t.regex(silent.stdout, /0 received/);
    });
  });
}
