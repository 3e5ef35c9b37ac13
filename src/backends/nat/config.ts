/**
 * NAT configuration: the addresses QEMU users expect (`-netdev user` defaults: network
 * 10.0.2.0/24, gateway 10.0.2.2, DNS 10.0.2.3, first DHCP lease 10.0.2.15) and the knobs of the
 * stack. Accepted as an object (validated with zod) or in QEMU's own option syntax:
 *   net=10.0.2.0/24,host=10.0.2.2,dns=10.0.2.3,dhcpstart=10.0.2.15,hostfwd=tcp:127.0.0.1:2222-:22
 * IPv6 fields follow QEMU's names (ipv6-net, ipv6-host, ipv6-dns) for the later IPv6 work.
 */
import ipaddr from 'ipaddr.js';
import { z } from 'zod';

export type Filtering = 'endpoint-independent' | 'address-dependent' | 'address-and-port-dependent';
export const FILTERING_MODES: readonly Filtering[] = ['endpoint-independent', 'address-dependent', 'address-and-port-dependent'];

/** Who a port-forwarded TCP connection comes from, as the guest sees it. */
export type ForwardSource = 'gateway' | 'client';
export const FORWARD_SOURCES: readonly ForwardSource[] = ['gateway', 'client'];

export interface HostForward {
  protocol: 'tcp' | 'udp';
  hostAddress: string;
  hostPort: number;
  /** Empty = the first DHCP lease (the guest), as QEMU does. */
  guestAddress: string;
  guestPort: number;
}

const ipv4 = z.string().refine((s) => ipaddr.IPv4.isValidFourPartDecimal(s), 'not an IPv4 address');

export const natConfigSchema = z.object({
  network: ipv4.default('10.0.2.0'),
  prefixLength: z.number().int().min(8).max(30).default(24),
  gateway: ipv4.default('10.0.2.2'),
  dns: ipv4.default('10.0.2.3'),
  dhcpStart: ipv4.default('10.0.2.15'),
  /** MTU offered by DHCP (option 26) and used for frames without GSO. */
  mtu: z.number().int().min(576).max(65520).default(1500),
  /** Gateway MAC (what ARP answers for the virtual addresses). */
  gatewayMac: z.string().default('52:55:0a:00:02:02'),
  /** Connections to the gateway address reach the host's 127.0.0.1. */
  hostLoopback: z.boolean().default(true),
  /** Upstream DNS servers (addr or addr:port); empty = the host's resolv.conf. */
  dnsUpstream: z.array(z.string()).default([]),
  /** Static DNS answers: name → address. */
  dnsHosts: z.record(z.string()).default({}),
  /** DHCP lease time, seconds. */
  leaseTime: z.number().int().min(60).default(86400),
  hostForwards: z
    .array(
      z.object({
        protocol: z.enum(['tcp', 'udp']),
        hostAddress: z.string(),
        hostPort: z.number().int().min(0).max(65535),
        guestAddress: z.string(),
        guestPort: z.number().int().min(1).max(65535),
      }),
    )
    .default([]),
  /** RFC 4787 filtering for UDP (mapping is always endpoint-independent). */
  udpFiltering: z.enum(['endpoint-independent', 'address-dependent', 'address-and-port-dependent']).default('address-dependent'),
  /**
   * Seconds a UDP mapping lives without outbound traffic. RFC 4787 REQ-5 wants at least 120
   * (the default is 180); lower values are accepted for tests.
   */
  udpTimeout: z.number().int().min(1).default(180),
  /**
   * Port-forwarded TCP connections reach the guest from the gateway (QEMU's behaviour), or
   * from the real client's address when that address is one the guest can tell from its own
   * network and not the host itself (loopback and the host's own addresses stay the gateway).
   */
  forwardSource: z.enum(['gateway', 'client']).default('gateway'),
  /** Limits: bad or hostile guests cannot make the process grow without bound. */
  maxFlows: z.number().int().min(1).default(65536),
  maxHalfOpen: z.number().int().min(1).default(4096),
});

export type NatConfig = z.infer<typeof natConfigSchema>;

export function natConfig(partial: Partial<z.input<typeof natConfigSchema>> = {}): NatConfig {
  return natConfigSchema.parse(partial);
}

/** Parse one QEMU hostfwd rule: `[tcp|udp]:[hostaddr]:hostport-[guestaddr]:guestport`. */
export function parseHostForward(rule: string): HostForward {
  const m = /^(tcp|udp)?:([^:]*):(\d+)-([^:]*):(\d+)$/.exec(rule.trim());
  if (!m) throw Object.assign(new Error(`bad hostfwd rule "${rule}" (want tcp:ADDR:PORT-ADDR:PORT)`), { code: 'EINVAL' });
  const hostPort = Number(m[3]);
  const guestPort = Number(m[5]);
  if (hostPort > 65535 || guestPort < 1 || guestPort > 65535) {
    throw Object.assign(new Error(`bad port in hostfwd rule "${rule}"`), { code: 'EINVAL' });
  }
  return {
    protocol: (m[1] ?? 'tcp') as 'tcp' | 'udp',
    hostAddress: m[2] || '127.0.0.1',
    hostPort,
    guestAddress: m[4],
    guestPort,
  };
}

export function formatHostForward(f: HostForward): string {
  return `${f.protocol}:${f.hostAddress}:${f.hostPort}-${f.guestAddress}:${f.guestPort}`;
}

/**
 * QEMU `-netdev user` option syntax → config fields. Unknown keys are an error (a typo should
 * not silently change nothing). `restrict`, `ipv6*`, `hostname`, `domainname` are accepted and
 * ignored where usernet has no equivalent yet.
 */
export function parseQemuUserOptions(text: string): Partial<z.input<typeof natConfigSchema>> {
  const out: Partial<z.input<typeof natConfigSchema>> = {};
  const forwards: HostForward[] = [];
  for (const part of text.split(',').filter(Boolean)) {
    const eq = part.indexOf('=');
    const key = eq < 0 ? part : part.slice(0, eq);
    const value = eq < 0 ? '' : part.slice(eq + 1);
    switch (key) {
      case 'net': {
        const [addr, len] = value.split('/');
        out.network = addr;
        if (len !== undefined) {
          out.prefixLength = len.includes('.') ? ipaddr.IPv4.parse(len).prefixLengthFromSubnetMask() ?? 24 : Number(len);
        }
        break;
      }
      case 'host':
        out.gateway = value;
        break;
      case 'dns':
        out.dns = value;
        break;
      case 'dhcpstart':
        out.dhcpStart = value;
        break;
      case 'hostfwd':
        forwards.push(parseHostForward(value));
        break;
      case 'mtu':
        out.mtu = Number(value);
        break;
      case 'restrict':
      case 'ipv4':
      case 'ipv6':
      case 'ipv6-net':
      case 'ipv6-host':
      case 'ipv6-dns':
      case 'hostname':
      case 'domainname':
      case 'id':
        break;
      default:
        throw Object.assign(new Error(`unknown -netdev user option "${key}"`), { code: 'EINVAL' });
    }
  }
  if (forwards.length) out.hostForwards = forwards;
  return out;
}
