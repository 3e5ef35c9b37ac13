/**
 * NAT traversal through usernet (issue 8; RFC 4787 §5, RFC 5382 REQ-2): in the routed topology
 * (guest → usernet in its host namespace → r1 → r2 → r3 → target), with real kernel sockets on
 * both ends (test/helpers/nat-traversal.ts):
 *  - UDP filtering per `--udp-filtering`: who besides the guest's destination reaches it
 *    through its mapping (endpoint-independent: anyone; address-dependent: the destination's
 *    address; address-and-port-dependent: the destination itself);
 *  - TCP simultaneous open through a port forward: the guest connects out from the forwarded
 *    port while the peer connects in to the forward's host port, the SYNs cross (r2 holds the
 *    first SYN each way), both connects succeed and data flows both ways;
 *  - `--forward-source client`: a forwarded connection reaches the guest from the real client's
 *    address (host-local clients still from the gateway), the default shows the gateway;
 *  - keep-alives: an idle guest connection with SO_KEEPALIVE survives while the path is up, and
 *    errors out once the target goes silent (instead of hanging on usernet's answers).
 */
import { testIf } from '../helpers/env';
import { withSandbox } from '../helpers/netns';
import { startNatGuest } from '../helpers/nat-guest';
import { buildTopology, TARGET_ADDR } from '../helpers/topology';
import { FILTERING_EXPECTED, forwardPeerSeen, HOST_ADDR, keepAliveProbe, simultaneousOpen, udpFilteringSeen } from '../helpers/nat-traversal';

const GATEWAY = '10.0.2.2';
const test = testIf('root', 'netns', 'tun', 'cmd:python3', 'cmd:iptables');

for (const mode of Object.keys(FILTERING_EXPECTED)) {
  test(`UDP filtering ${mode}: only the allowed peers reach the guest through its mapping`, async (t) => {
    await withSandbox(async (sb) => {
      const topo = await buildTopology(sb);
      const g = await startNatGuest(sb, { hostNetns: topo.host, args: ['--udp-filtering', mode] });
      const seen = await udpFilteringSeen(sb, g.ns, topo);
      t.log(`${mode}: ${seen.join(' ')}`);
      t.deepEqual(seen, FILTERING_EXPECTED[mode]);
    }, 120_000);
  });
}

test('TCP simultaneous open through a port forward: both connects succeed, data both ways', async (t) => {
  await withSandbox(async (sb) => {
    const topo = await buildTopology(sb);
    const g = await startNatGuest(sb, { hostNetns: topo.host, args: ['--hostfwd', 'tcp:0.0.0.0:9000-:9001'] });
    const r = await simultaneousOpen(sb, g.ns, topo, 9000, 9001);
    t.log(r);
    t.is(r.guest, 'got from-peer');
    t.is(r.peer, 'got from-guest');
  }, 120_000);
});

test('--forward-source client: the guest sees the client address; host-local clients and the default show the gateway', async (t) => {
  await withSandbox(async (sb) => {
    const topo = await buildTopology(sb);
    const g = await startNatGuest(sb, { hostNetns: topo.host, args: ['--hostfwd', 'tcp:0.0.0.0:9022-:22', '--forward-source', 'client'] });
    const remote = await forwardPeerSeen(sb, g.ns, 22, topo.target, HOST_ADDR, 9022);
    const loopback = await forwardPeerSeen(sb, g.ns, 22, topo.host, '127.0.0.1', 9022);
    const hostLocal = await forwardPeerSeen(sb, g.ns, 22, topo.host, HOST_ADDR, 9022);
    t.log({ remote, loopback, hostLocal });
    t.is(remote, `${TARGET_ADDR} ping`, 'the reply went back over the forwarded connection');
    t.is(loopback, `${GATEWAY} ping`);
    t.is(hostLocal, `${GATEWAY} ping`);
    await g.stop();
    const d = await startNatGuest(sb, { hostNetns: topo.host, args: ['--hostfwd', 'tcp:0.0.0.0:9023-:23'] });
    const byDefault = await forwardPeerSeen(sb, d.ns, 23, topo.target, HOST_ADDR, 9023);
    t.is(byDefault, `${GATEWAY} ping`);
  }, 150_000);
});

test('keep-alives: an idle connection survives while the path is up and errors out once the target is silent', async (t) => {
  await withSandbox(async (sb) => {
    const topo = await buildTopology(sb);
    const g = await startNatGuest(sb, { hostNetns: topo.host });
    const r = await keepAliveProbe(sb, g.ns, topo);
    t.log(r);
    t.true(r.survivedIdle, 'alive after several probe intervals');
    t.regex(r.afterSilence, /^error E(CONNRESET|TIMEDOUT|HOSTUNREACH)$/);
  }, 150_000);
});
