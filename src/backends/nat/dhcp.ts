/**
 * The DHCP server of the virtual network (RFC 2131, options RFC 2132), at the gateway address.
 *
 * Leases are keyed by the client identifier (option 61) when the client sends one, else by its
 * hardware address, and handed out from `config.dhcpStart` upwards (skipping the gateway and DNS
 * addresses) to the last host address of the network. A client that comes back gets its old
 * address again, as long as nobody else took it meanwhile.
 *
 * Client states and what the server does (RFC 2131 §4.3):
 *   DISCOVER                      → OFFER: the client's lease, else its requested address if
 *                                   free, else the first free one; held 60 s as "offered"
 *   REQUEST, SELECTING            server id = ours → ACK if it names the offered address, else
 *     (server id present)         NAK; server id = another → the client chose it: forget ours
 *   REQUEST, INIT-REBOOT          → ACK if the requested address is the client's, or free (a
 *     (requested ip, no ciaddr)   client that outlived a usernet restart keeps its address);
 *                                   NAK if it belongs to someone else or not to this network
 *   REQUEST, RENEWING/REBINDING   same test on ciaddr; the ACK goes unicast to ciaddr
 *     (ciaddr, no requested ip)
 *   DECLINE                       the address is taken by someone we do not know: not handed
 *                                   out again for 10 minutes
 *   RELEASE                       the lease ends now
 *   INFORM                        → ACK with the configuration, no lease (§3.4)
 *
 * Replies (§4.1, no relay agents here): NAK is broadcast; with ciaddr set, unicast to ciaddr;
 * with the broadcast flag, broadcast; else unicast to yiaddr at the client's hardware address
 * (the client cannot ARP yet). Options in OFFER/ACK: 53 message type, 54 server id, 51 lease
 * time, 58/59 T1/T2 (½ and ⅞ of the lease, §4.4.5), 1 subnet mask, 3 router, 6 DNS server,
 * 26 interface MTU, 15 domain name (when configured). The Linux kernel's own client (ip=dhcp)
 * and busybox udhcpc both take these.
 */
import type { Meter, Stage } from '../../meter/meter';
import { NAT_DHCP } from '../../meter/stages';
import { log, logOnce } from '../../log';
import { ipv4ToString } from '../../wire/address';
import {
  BOOTP_MIN_LEN,
  BOOTREPLY,
  BOOTREQUEST,
  DHCP_BROADCAST_FLAG,
  DHCP_CLIENT_PORT,
  DHCP_SERVER_PORT,
  DhcpMessage,
  DhcpRepr,
  DHCP_ACK,
  DHCP_DECLINE,
  DHCP_DISCOVER,
  DHCP_INFORM,
  DHCP_NAK,
  DHCP_OFFER,
  DHCP_RELEASE,
  DHCP_REQUEST,
} from '../../wire/dhcp';
import type { AddressPolicy } from './policy';

export { DHCP_CLIENT_PORT, DHCP_SERVER_PORT };
const OFFER_HOLD_MS = 60_000;
const DECLINE_HOLD_MS = 600_000;
const BROADCAST_MAC = new Uint8Array([0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);

export interface Lease {
  ip: number;
  key: string;
  mac: Uint8Array;
  state: 'offered' | 'bound' | 'declined';
  expiresAt: number;
  hostname: string | null;
}

export interface LeaseInfo {
  address: string;
  mac: string;
  state: Lease['state'];
  expiresAt: number;
  hostname: string | null;
}

/** Sends a DHCP reply (from the gateway, port 67 → 68) to `ip` at Ethernet `mac`. */
export type DhcpSend = (payload: Uint8Array, ip: number, mac: Uint8Array) => void;

export interface DhcpServerOptions {
  meter: Meter;
  policy: AddressPolicy;
  leaseTime: number;
  mtu: number;
  domainName?: string;
  send: DhcpSend;
  now?: () => number;
}

export class DhcpServer {
  private readonly byKey = new Map<string, Lease>();
  private readonly byIp = new Map<number, Lease>();
  private readonly view = new DhcpMessage();
  private readonly buf = new Uint8Array(1024);
  private readonly stage: Stage;
  private readonly now: () => number;
  private readonly first: number;
  private readonly last: number;

  constructor(private readonly opts: DhcpServerOptions) {
    this.stage = opts.meter.stage(NAT_DHCP);
    this.now = opts.now ?? Date.now;
    this.first = opts.policy.dhcpStart;
    this.last = (opts.policy.broadcast - 1) >>> 0;
  }

  /** The MAC holding a live lease on `ip` (ARP leaves those addresses to their owners). */
  leaseHolder(ip: number): Uint8Array | null {
    const l = this.byIp.get(ip);
    return l && l.state !== 'declined' && l.expiresAt > this.now() ? l.mac : null;
  }

  leases(): LeaseInfo[] {
    return [...this.byKey.values()].map((l) => ({
      address: ipv4ToString(l.ip),
      mac: [...l.mac].map((b) => b.toString(16).padStart(2, '0')).join(':'),
      state: l.state,
      expiresAt: l.expiresAt,
      hostname: l.hostname,
    }));
  }

  /** A UDP payload from a client (port 68 → 67). `payload` is only read during the call. */
  input(payload: Uint8Array): void {
    const msg = this.view.wrap(payload, 0, payload.length);
    const err = msg.check();
    if (err) return this.drop(`bad-${err.code}`);
    const req = DhcpRepr.parse(msg);
    if (req instanceof Error) return this.drop(`bad-${(req as { code?: string }).code ?? 'message'}`);
    if (req.op !== BOOTREQUEST) return this.drop('not-a-request');
    this.stage.pass(1, payload.length);
    const mac = req.chaddr.subarray(0, 6);
    const key = req.clientId && req.clientId.length > 0 ? `id:${hex(req.clientId)}` : `hw:${hex(mac)}`;
    const now = this.now();
    switch (req.messageType) {
      case DHCP_DISCOVER:
        return this.discover(req, key, mac, now);
      case DHCP_REQUEST:
        return this.request(req, key, mac, now);
      case DHCP_DECLINE:
        return this.decline(req, key, now);
      case DHCP_RELEASE:
        return this.release(req, key);
      case DHCP_INFORM:
        return this.inform(req, mac);
      default:
        return this.drop('unexpected-type');
    }
  }

  private discover(req: DhcpRepr, key: string, mac: Uint8Array, now: number): void {
    let lease = this.byKey.get(key);
    if (!lease || lease.state === 'declined' || !this.isFree(lease.ip, key, now)) {
      const wanted = req.requestedIp ?? 0;
      const ip = wanted && this.inPool(wanted) && this.isFree(wanted, key, now) ? wanted : this.firstFree(key, now);
      if (ip < 0) {
        if (this.stage.dropped('pool-exhausted')) log.warn('DHCP pool exhausted: no address to offer');
        return;
      }
      lease = this.bind(key, ip, mac, 'offered', now + OFFER_HOLD_MS);
    } else if (lease.state === 'offered' || lease.expiresAt <= now) {
      lease.state = 'offered';
      lease.expiresAt = now + OFFER_HOLD_MS;
    }
    lease.hostname = req.hostname ?? lease.hostname;
    this.reply(req, DHCP_OFFER, lease.ip, mac, true);
  }

  private request(req: DhcpRepr, key: string, mac: Uint8Array, now: number): void {
    const gateway = this.opts.policy.gateway;
    const lease = this.byKey.get(key);
    if (req.serverId != null && req.serverId !== 0) {
      // SELECTING.
      if (req.serverId !== gateway) {
        if (lease && lease.state === 'offered') this.forget(lease);
        return;
      }
      const wanted = req.requestedIp ?? req.ciaddr;
      if (lease && lease.state !== 'declined' && lease.ip === wanted) return this.ack(req, lease, mac, now);
      return this.nak(req, mac);
    }
    const wanted = req.requestedIp ?? req.ciaddr;
    if (!wanted) return this.drop('request-without-address');
    // INIT-REBOOT (requested ip) or RENEWING/REBINDING (ciaddr).
    if (!this.inPool(wanted)) return this.nak(req, mac);
    if (lease && lease.state !== 'declined' && lease.ip === wanted) return this.ack(req, lease, mac, now);
    if (this.isFree(wanted, key, now)) {
      if (lease) this.forget(lease);
      return this.ack(req, this.bind(key, wanted, mac, 'bound', now), mac, now);
    }
    this.nak(req, mac);
  }

  private ack(req: DhcpRepr, lease: Lease, mac: Uint8Array, now: number): void {
    lease.state = 'bound';
    lease.expiresAt = now + this.opts.leaseTime * 1000;
    lease.mac = Uint8Array.prototype.slice.call(mac) as Uint8Array;
    lease.hostname = req.hostname ?? lease.hostname;
    this.reply(req, DHCP_ACK, lease.ip, mac, true);
  }

  private nak(req: DhcpRepr, mac: Uint8Array): void {
    this.stage.dropped('nak');
    this.reply(req, DHCP_NAK, 0, mac, false);
  }

  private decline(req: DhcpRepr, key: string, now: number): void {
    if (req.serverId != null && req.serverId !== this.opts.policy.gateway) return;
    const ip = req.requestedIp ?? 0;
    const lease = this.byKey.get(key);
    if (lease && lease.ip === ip) this.forget(lease);
    if (this.inPool(ip)) {
      this.bind(`declined:${ip}`, ip, new Uint8Array(6), 'declined', now + DECLINE_HOLD_MS);
      logOnce(`nat.dhcp.decline.${ip}`, `DHCP: a client declined ${ipv4ToString(ip)} (in use by someone else)`);
    }
  }

  private release(req: DhcpRepr, key: string): void {
    const lease = this.byKey.get(key);
    if (lease && lease.ip === req.ciaddr) this.forget(lease);
  }

  private inform(req: DhcpRepr, mac: Uint8Array): void {
    if (!req.ciaddr) return this.drop('inform-without-ciaddr');
    this.reply(req, DHCP_ACK, 0, mac, true);
  }

  /* ------------------------------------------------------------------ leases */

  private inPool(ip: number): boolean {
    const p = this.opts.policy;
    return ip >= this.first && ip <= this.last && p.isGuestSource4(ip);
  }

  private isFree(ip: number, key: string, now: number): boolean {
    const l = this.byIp.get(ip);
    return !l || l.key === key || l.expiresAt <= now;
  }

  private firstFree(key: string, now: number): number {
    for (let ip = this.first; ip <= this.last; ip++) {
      if (this.inPool(ip) && this.isFree(ip, key, now)) return ip;
    }
    return -1;
  }

  private bind(key: string, ip: number, mac: Uint8Array, state: Lease['state'], expiresAt: number): Lease {
    const old = this.byIp.get(ip);
    if (old && old.key !== key) this.forget(old);
    const mine = this.byKey.get(key);
    if (mine && mine.ip !== ip) this.forget(mine);
    const lease: Lease = { ip, key, mac: Uint8Array.prototype.slice.call(mac) as Uint8Array, state, expiresAt, hostname: null };
    this.byKey.set(key, lease);
    this.byIp.set(ip, lease);
    return lease;
  }

  private forget(lease: Lease): void {
    if (this.byKey.get(lease.key) === lease) this.byKey.delete(lease.key);
    if (this.byIp.get(lease.ip) === lease) this.byIp.delete(lease.ip);
  }

  /* ------------------------------------------------------------------ replies */

  private reply(req: DhcpRepr, type: number, yiaddr: number, mac: Uint8Array, withConfig: boolean): void {
    const p = this.opts.policy;
    // INFORM is answered with an ACK without an address: configuration, no lease (§3.4).
    const noLease = type === DHCP_NAK || yiaddr === 0;
    const rep = new DhcpRepr();
    rep.op = BOOTREPLY;
    rep.xid = req.xid;
    rep.secs = 0;
    rep.flags = req.flags;
    rep.ciaddr = type === DHCP_NAK ? 0 : req.ciaddr;
    rep.yiaddr = yiaddr;
    rep.siaddr = 0;
    rep.giaddr = req.giaddr;
    rep.chaddr = req.chaddr;
    rep.messageType = type;
    rep.serverId = p.gateway;
    if (withConfig) {
      rep.subnetMask = p.mask;
      rep.router = p.gateway;
      rep.dnsServers = [p.dns];
      rep.mtu = this.opts.mtu;
      if (this.opts.domainName) rep.domainName = this.opts.domainName;
      if (!noLease) {
        const t = this.opts.leaseTime;
        rep.leaseTime = t;
        rep.renewalTime = Math.floor(t / 2);
        rep.rebindingTime = Math.floor((t * 7) / 8);
      }
    }
    const view = this.view.wrap(this.buf, 0, this.buf.length);
    let len = rep.emit(view);
    if (len < BOOTP_MIN_LEN) {
      // RFC 1542 §2.1: some BOOTP-era clients drop shorter messages.
      this.buf.fill(0, len, BOOTP_MIN_LEN);
      len = BOOTP_MIN_LEN;
    }
    let ip: number;
    let to: Uint8Array;
    if (type === DHCP_NAK) {
      ip = 0xffffffff;
      to = BROADCAST_MAC;
    } else if (req.ciaddr) {
      ip = req.ciaddr;
      to = mac;
    } else if (req.flags & DHCP_BROADCAST_FLAG) {
      ip = 0xffffffff;
      to = BROADCAST_MAC;
    } else {
      ip = yiaddr;
      to = mac;
    }
    this.opts.send(this.buf.subarray(0, len), ip, to);
  }

  private drop(reason: string): void {
    if (this.stage.dropped(reason)) logOnce(`nat.dhcp.${reason}`, `DHCP message dropped: ${reason}`);
  }
}

function hex(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.length).toString('hex');
}
