/**
 * A faithful NAT seen from a real VM (issue 8): the test guest on usernet's virtio-net (the
 * `usernet vm` CLI, run inside the routed topology's host namespace, test/helpers/topology.ts),
 * its busybox traceroute — UDP probes and ICMP echo (-I) — lists every hop to the target:
 * usernet's gateway (TTL 1 answered by usernet), the three routers (the guest's TTL carried onto
 * the host sockets, their Time Exceeded translated back), the target. The netns tests
 * (test/integration/nat-faithful.test.ts) check the rest of the faithful NAT in detail.
 */
import { testIf } from '../helpers/env';
import { CLI, ensureBuilt } from '../helpers/nat-guest';
import { withSandbox } from '../helpers/netns';
import { buildTopology, traceHops, ROUTER_ADDRS, TARGET_ADDR } from '../helpers/topology';

const test = testIf('root', 'netns', 'tun', 'qemu');
const ALL_HOPS = ['10.0.2.2', ...ROUTER_ADDRS, TARGET_ADDR];

test.before(async () => {
  await ensureBuilt();
});

test.serial("a VM's UDP and ICMP traceroutes through usernet list every hop", async (t) => {
  await withSandbox(async (sb) => {
    const topo = await buildTopology(sb);
    const cmd = [
      `echo @@udp; traceroute -n -q 1 -w 3 ${TARGET_ADDR}`,
      `echo @@icmp; traceroute -I -n -q 1 -w 3 ${TARGET_ADDR}`,
      'echo @@done',
    ].join('\n');
    const r = await sb.exec(topo.host, [process.execPath, CLI, 'vm', '--quiet', '--timeout', '240', '--', cmd], 300_000);
    t.log(r.stdout + r.stderr);
    t.is(r.code, 0, r.stderr);
    const udp = r.stdout.slice(r.stdout.indexOf('@@udp'), r.stdout.indexOf('@@icmp'));
    const icmp = r.stdout.slice(r.stdout.indexOf('@@icmp'), r.stdout.indexOf('@@done'));
    t.deepEqual(traceHops(udp), ALL_HOPS, 'UDP traceroute');
    t.deepEqual(traceHops(icmp), ALL_HOPS, 'ICMP traceroute (-I)');
  }, 320_000);
});
