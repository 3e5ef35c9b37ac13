/**
 * From command-line options to a NatConfig. Two spellings are accepted and merged: QEMU's
 * `-netdev user` option string (`-o net=10.0.2.0/24,host=10.0.2.2,hostfwd=...`, parsed by
 * config.ts) and usernet's own flags (`--net`, `--host`, `--dns`, `--dhcp-start`, `--mtu`,
 * `--dns-upstream`, `--dns-host`, `--hostfwd`, `--no-host-loopback`, `--udp-filtering`,
 * `--forward-source`). Where both name the same
 * setting, the flag wins (it is the more specific spelling); lists (hostfwd, upstreams) are
 * concatenated, `-o` entries first. Errors are thrown with `code: 'EINVAL'` and a message that
 * names the option, so the CLI can print them and exit 2.
 */
import ipaddr from 'ipaddr.js';
import { ZodError } from 'zod';
import {
  FILTERING_MODES,
  FORWARD_SOURCES,
  natConfig,
  parseHostForward,
  parseQemuUserOptions,
  type Filtering,
  type ForwardSource,
  type HostForward,
  type NatConfig,
} from '../backends/nat/config';
import { parseUpstream } from '../backends/nat/dns';

export interface NatCliOptions {
  o?: string[];
  net?: string;
  host?: string;
  dns?: string;
  dhcpStart?: string;
  mtu?: number;
  dnsUpstream?: string[];
  dnsHost?: string[];
  hostfwd?: string[];
  /** commander's `--no-host-loopback` gives hostLoopback: false. */
  hostLoopback?: boolean;
  /** RFC 4787 §5 UDP filtering (endpoint-independent, address-dependent, address-and-port-dependent). */
  udpFiltering?: string;
  /** Port-forwarded TCP from the gateway (default) or the client's own address. */
  forwardSource?: string;
}

function invalid(message: string): Error {
  return Object.assign(new Error(message), { code: 'EINVAL' });
}

/** `10.0.2.0/24` or `10.0.2.0/255.255.255.0` → network and prefix length. */
export function parseNetwork(text: string): { network: string; prefixLength: number } {
  const [addr, len] = text.split('/');
  if (!ipaddr.IPv4.isValidFourPartDecimal(addr)) throw invalid(`--net: "${text}" is not an IPv4 network`);
  let prefixLength = 24;
  if (len !== undefined) {
    if (len.includes('.')) {
      if (!ipaddr.IPv4.isValidFourPartDecimal(len)) throw invalid(`--net: bad netmask in "${text}"`);
      const p = ipaddr.IPv4.parse(len).prefixLengthFromSubnetMask();
      if (p === null) throw invalid(`--net: "${len}" is not a contiguous netmask`);
      prefixLength = p;
    } else {
      prefixLength = Number(len);
      if (!Number.isInteger(prefixLength)) throw invalid(`--net: bad prefix length in "${text}"`);
    }
  }
  return { network: addr, prefixLength };
}

/** `name=addr` → [name, addr]. */
export function parseDnsHost(text: string): [string, string] {
  const eq = text.indexOf('=');
  if (eq <= 0) throw invalid(`--dns-host: want name=address, got "${text}"`);
  const name = text.slice(0, eq).trim().replace(/\.$/, '').toLowerCase();
  const addr = text.slice(eq + 1).trim();
  if (!ipaddr.isValid(addr)) throw invalid(`--dns-host: "${addr}" is not an address`);
  return [name, addr];
}

/** `ADDR`, `ADDR:PORT` (IPv4) or `[V6]:PORT`: checked with the DNS module's parser, kept as text. */
export function checkDnsUpstream(text: string): string {
  try {
    parseUpstream(text);
  } catch {
    throw invalid(`--dns-upstream: "${text}" is not ADDR[:PORT]`);
  }
  return text;
}

export function buildNatConfig(opts: NatCliOptions): NatConfig {
  const partial: Parameters<typeof natConfig>[0] = {};
  const forwards: HostForward[] = [];
  const upstreams: string[] = [];
  for (const o of opts.o ?? []) {
    const p = parseQemuUserOptions(o);
    const { hostForwards, dnsUpstream, ...rest } = p;
    Object.assign(partial, rest);
    forwards.push(...((hostForwards as HostForward[] | undefined) ?? []));
    upstreams.push(...(dnsUpstream ?? []));
  }
  if (opts.net !== undefined) Object.assign(partial, parseNetwork(opts.net));
  if (opts.host !== undefined) partial.gateway = opts.host;
  if (opts.dns !== undefined) partial.dns = opts.dns;
  if (opts.dhcpStart !== undefined) partial.dhcpStart = opts.dhcpStart;
  if (opts.mtu !== undefined) partial.mtu = opts.mtu;
  if (opts.hostLoopback === false) partial.hostLoopback = false;
  if (opts.udpFiltering !== undefined) {
    if (!FILTERING_MODES.includes(opts.udpFiltering as Filtering)) throw invalid(`--udp-filtering: want one of ${FILTERING_MODES.join(', ')}`);
    partial.udpFiltering = opts.udpFiltering as Filtering;
  }
  if (opts.forwardSource !== undefined) {
    if (!FORWARD_SOURCES.includes(opts.forwardSource as ForwardSource)) throw invalid(`--forward-source: want one of ${FORWARD_SOURCES.join(', ')}`);
    partial.forwardSource = opts.forwardSource as ForwardSource;
  }
  for (const u of opts.dnsUpstream ?? []) upstreams.push(checkDnsUpstream(u));
  if (upstreams.length) partial.dnsUpstream = upstreams;
  if (opts.dnsHost?.length) {
    const hosts: Record<string, string> = {};
    for (const h of opts.dnsHost) {
      const [name, addr] = parseDnsHost(h);
      hosts[name] = addr;
    }
    partial.dnsHosts = hosts;
  }
  for (const r of opts.hostfwd ?? []) forwards.push(parseHostForward(r));
  if (forwards.length) partial.hostForwards = forwards;
  let config: NatConfig;
  try {
    config = natConfig(partial);
  } catch (err) {
    if (err instanceof ZodError) {
      throw invalid(err.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; '));
    }
    throw err;
  }
  checkAddressing(config);
  return config;
}

/** The gateway, DNS and DHCP addresses must lie inside the network, and be distinct. */
function checkAddressing(c: NatConfig): void {
  const net = ipaddr.IPv4.parse(c.network);
  for (const [name, a] of [
    ['host', c.gateway],
    ['dns', c.dns],
    ['dhcp-start', c.dhcpStart],
  ] as const) {
    if (!ipaddr.IPv4.parse(a).match(net, c.prefixLength)) throw invalid(`--${name} ${a} is outside ${c.network}/${c.prefixLength}`);
  }
  if (c.dhcpStart === c.gateway || c.dhcpStart === c.dns) throw invalid(`--dhcp-start ${c.dhcpStart} collides with the gateway or DNS address`);
}

/** The dotted netmask of a prefix length (for the summary). */
export function netmaskOf(prefixLength: number): string {
  return ipaddr.IPv4.subnetMaskFromPrefixLength(prefixLength).toString();
}
