/**
 * A routed path for NAT tests (issue 8): the guest namespace → usernet (running in its own
 * "host" namespace) → three router namespaces → a target namespace, so a traceroute from the
 * guest has real hops to show and real routers to answer Time Exceeded / Unreachable.
 *
 *   guest ──tap── usernet [host ns] h0 10.77.0.1 ── 10.77.0.2 r1 10.77.1.1 ── 10.77.1.2 r2
 *     r2 10.77.2.1 ──(optional small MTU)── 10.77.2.2 r3 10.77.3.1 ── 10.77.3.2 target
 *
 * The hops a guest traceroute to the target should list: usernet's gateway (10.0.2.2), r1's
 * near address 10.77.0.2, r2's 10.77.1.2, r3's 10.77.2.2, the target 10.77.3.2.
 *
 * Every namespace and veth is made through the Sandbox (test/helpers/netns.ts), so all of it is
 * removed when the test ends. The routers forward (ip_forward=1) and have the per-namespace ICMP
 * rate limits (`icmp_ratelimit`, `icmp_msgs_per_sec`) lifted; the kernel still limits
 * unreachables per peer in `ip_error` (1/s, burst 5), so tests that probe unreachables after a
 * traceroute wait a few seconds (`settle`). `unreachable` is an address inside the routed
 * space that r3 routes as `unreachable` (r3 answers ICMP net/host unreachable for it).
 */
import type { Sandbox } from './netns';

export interface TopologyOptions {
  /** MTU of the r2–r3 link (both ends). Default 1500. */
  r2r3Mtu?: number;
}

export interface Topology {
  host: string;
  routers: [string, string, string];
  target: string;
  /** The target's address. */
  targetAddr: string;
  /** Near-side addresses of r1, r2, r3 (what a traceroute from the host side shows). */
  routerAddrs: [string, string, string];
  /** An address r3 routes nowhere: r3 answers net unreachable (`ip route add unreachable`). */
  unreachableAddr: string;
}

export const TARGET_ADDR = '10.77.3.2';
export const ROUTER_ADDRS: [string, string, string] = ['10.77.0.2', '10.77.1.2', '10.77.2.2'];

/** Build the routed part (host ns, routers, target); usernet is then started in `host`. */
export async function buildTopology(sb: Sandbox, opts: TopologyOptions = {}): Promise<Topology> {
  const host = await sb.netns('host');
  const r1 = await sb.netns('r1');
  const r2 = await sb.netns('r2');
  const r3 = await sb.netns('r3');
  const target = await sb.netns('target');
  const ip = (ns: string, ...args: string[]): Promise<string> => sb.must(['ip', '-n', ns, ...args]);
  const sysctl = (ns: string, kv: string): Promise<string> => sb.must(['sysctl', '-qw', kv], ns);

  await sb.veth(host, 'h0', r1, 'r1a');
  await sb.veth(r1, 'r1b', r2, 'r2a');
  await sb.veth(r2, 'r2b', r3, 'r3a');
  await sb.veth(r3, 'r3b', target, 't0');

  await ip(host, 'addr', 'add', '10.77.0.1/24', 'dev', 'h0');
  await ip(r1, 'addr', 'add', '10.77.0.2/24', 'dev', 'r1a');
  await ip(r1, 'addr', 'add', '10.77.1.1/24', 'dev', 'r1b');
  await ip(r2, 'addr', 'add', '10.77.1.2/24', 'dev', 'r2a');
  await ip(r2, 'addr', 'add', '10.77.2.1/24', 'dev', 'r2b');
  await ip(r3, 'addr', 'add', '10.77.2.2/24', 'dev', 'r3a');
  await ip(r3, 'addr', 'add', '10.77.3.1/24', 'dev', 'r3b');
  await ip(target, 'addr', 'add', '10.77.3.2/24', 'dev', 't0');
  if (opts.r2r3Mtu) {
    await ip(r2, 'link', 'set', 'r2b', 'mtu', String(opts.r2r3Mtu));
    await ip(r3, 'link', 'set', 'r3a', 'mtu', String(opts.r2r3Mtu));
  }

  await ip(host, 'route', 'add', 'default', 'via', '10.77.0.2');
  await ip(r1, 'route', 'add', '10.77.2.0/23', 'via', '10.77.1.2');
  await ip(r2, 'route', 'add', '10.77.0.0/24', 'via', '10.77.1.1');
  await ip(r2, 'route', 'add', '10.77.3.0/24', 'via', '10.77.2.2');
  await ip(r3, 'route', 'add', '10.77.0.0/23', 'via', '10.77.2.1');
  await ip(r3, 'route', 'add', 'unreachable', '10.77.9.0/24');
  await ip(r1, 'route', 'add', '10.77.9.0/24', 'via', '10.77.1.2');
  await ip(r2, 'route', 'add', '10.77.9.0/24', 'via', '10.77.2.2');
  await ip(target, 'route', 'add', 'default', 'via', '10.77.3.1');

  for (const r of [r1, r2, r3]) {
    await sysctl(r, 'net.ipv4.ip_forward=1');
    await sysctl(r, 'net.ipv4.icmp_ratelimit=0');
    await sb.exec(r, ['sysctl', '-qw', 'net.ipv4.icmp_msgs_per_sec=100000']);
  }
  for (const ns of [host, target]) {
    await sysctl(ns, 'net.ipv4.icmp_ratelimit=0');
    await sb.exec(ns, ['sysctl', '-qw', 'net.ipv4.icmp_msgs_per_sec=100000']);
  }
  // usernet's echo sockets are unprivileged ping sockets when the range allows
  await sysctl(host, 'net.ipv4.ping_group_range=0 2147483647');

  return {
    host,
    routers: [r1, r2, r3],
    target,
    targetAddr: TARGET_ADDR,
    routerAddrs: ROUTER_ADDRS,
    unreachableAddr: '10.77.9.9',
  };
}

/** Wait out the routers' per-peer ICMP error rate limit (1/s, burst 5). */
export function settle(ms = 3000): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** The hop addresses in `traceroute -n` / `tcptraceroute -n` output, in order ('*' for none). */
export function traceHops(output: string): string[] {
  const hops: string[] = [];
  for (const line of output.split('\n')) {
    const m = /^\s*(\d+)\s+(\S+)/.exec(line);
    if (!m) continue;
    hops.push(/^\d+\.\d+\.\d+\.\d+$/.test(m[2]) ? m[2] : '*');
  }
  return hops;
}
