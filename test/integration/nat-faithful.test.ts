/**
 * A faithful NAT (issue 8), measured in a routed topology (test/helpers/topology.ts): guest →
 * usernet (in its own host namespace) → r1 → r2 → r3 → target. Traceroutes of every kind from
 * the guest list all five hops (usernet's gateway answers TTL 1 itself; the routers answer the
 * guest's TTL carried onto the host sockets), ICMP errors from the path come back to the guest
 * about its own packets (ECONNREFUSED for a closed UDP port, frag-needed with the path MTU), TCP
 * crosses a 1280-byte link, and UDP mappings are endpoint-independent.
 *
 * The routers rate-limit unreachables per peer (1/s, burst 5, measured.md), so each test builds
 * its own topology and traceroutes send one probe per hop (`-q 1`, `-N 1`).
 */
import type { ExecutionContext } from 'ava';
import { testIf } from '../helpers/env';
import { withSandbox } from '../helpers/netns';
import { startNatGuest, type NatGuest } from '../helpers/nat-guest';
import { buildTopology, settle, traceHops, ROUTER_ADDRS, TARGET_ADDR, type Topology, type TopologyOptions } from '../helpers/topology';

const GATEWAY = '10.0.2.2';
const ALL_HOPS = [GATEWAY, ...ROUTER_ADDRS, TARGET_ADDR];

const netTest = testIf('root', 'netns', 'tun', 'cmd:traceroute');
const tcptraceTest = testIf('root', 'netns', 'tun', 'cmd:tcptraceroute');

function withPath<T>(opts: TopologyOptions, fn: (g: NatGuest, topo: Topology) => Promise<T>): Promise<T> {
  return withSandbox(async (sb) => {
    const topo = await buildTopology(sb, opts);
    const g = await startNatGuest(sb, { hostNetns: topo.host });
    return fn(g, topo);
  }, 180_000);
}

async function expectHops(t: ExecutionContext, g: NatGuest, argv: string[]): Promise<void> {
  const r = await g.exec(argv, 90_000);
  t.log(`${argv.join(' ')}\n${r.stdout}${r.stderr}`);
  t.deepEqual(traceHops(r.stdout), ALL_HOPS, `${argv[0]} ${argv.slice(1).join(' ')}`);
}

netTest('TCP SYN traceroute (traceroute -T) lists every hop', async (t) => {
  await withPath({}, async (g) => {
    await expectHops(t, g, ['traceroute', '-T', '-q', '1', '-N', '1', '-n', '-w', '3', '-p', '80', TARGET_ADDR]);
  });
});

tcptraceTest('tcptraceroute lists every hop', async (t) => {
  await withPath({}, async (g) => {
    await expectHops(t, g, ['tcptraceroute', '-n', '-q', '1', '-w', '3', TARGET_ADDR, '80']);
  });
});

netTest('ICMP traceroute (traceroute -I) lists every hop', async (t) => {
  await withPath({}, async (g) => {
    await expectHops(t, g, ['traceroute', '-I', '-q', '1', '-N', '1', '-n', '-w', '3', TARGET_ADDR]);
  });
});

netTest('UDP traceroute lists every hop', async (t) => {
  await withPath({}, async (g) => {
    await expectHops(t, g, ['traceroute', '-U', '-q', '1', '-N', '1', '-n', '-w', '3', TARGET_ADDR]);
  });
});
