/**
 * The DNS server at the virtual DNS address (QEMU default 10.0.2.3), UDP port 53.
 *
 * Answers, in this order, for a query with one question of class IN:
 *  1. static names: `config.dnsHosts` and `host.usernet.internal` → the gateway. A/AAAA get the
 *     address of the matching family, any other type an empty NOERROR answer (NODATA);
 *  2. A and AAAA from the host's resolver — `dns.lookup`, i.e. getaddrinfo(3), so /etc/hosts,
 *     nsswitch and `localhost` count exactly as for a program on the host;
 *  3. everything else, and names getaddrinfo cannot answer, is forwarded to the upstream
 *     nameservers (`config.dnsUpstream` ADDR[:PORT], else the `nameserver` lines of
 *     /etc/resolv.conf) over UDP. The query goes out byte for byte except its id, which is
 *     replaced by a random one (so queries of several guests never collide and off-path answers
 *     are hard to forge, RFC 5452 §9); the answer goes back with the guest's id. A pending table
 *     bounds the queries in flight; an upstream that does not answer within `timeoutMs` is
 *     retried at the next one, and after the last try the guest gets SERVFAIL.
 *
 * Answers leave from the DNS address, port 53. DNS over TCP is not served here: the stack sends
 * the guest's TCP port 53 to an upstream nameserver directly (see policy.ts).
 *
 * DNS is not a hot path: parsing through dns-packet allocates, and that is fine here.
 */
import { lookup as hostLookup } from 'node:dns';
import dgram from 'node:dgram';
import { randomInt } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import * as dnsPacket from 'dns-packet';
import type { Meter, Stage } from '../../meter/meter';
import { NAT_DNS } from '../../meter/stages';
import { log, logOnce } from '../../log';
import type { Family } from './context';

export const HOST_NAME = 'host.usernet.internal';
const ANSWER_TTL = 60;
const MAX_ANSWERS = 8;

export interface DnsUpstream {
  address: string;
  port: number;
  family: Family;
}

/** Parse `ADDR`, `ADDR:PORT` (IPv4), `ADDR` or `[ADDR]:PORT` (IPv6). */
export function parseUpstream(text: string): DnsUpstream {
  const s = text.trim();
  let address = s;
  let port = 53;
  const bracket = /^\[([^\]]+)\](?::(\d+))?$/.exec(s);
  if (bracket) {
    address = bracket[1];
    if (bracket[2]) port = Number(bracket[2]);
  } else if (s.split(':').length === 2) {
    const i = s.indexOf(':');
    address = s.slice(0, i);
    port = Number(s.slice(i + 1));
  }
  const family = isIP(address);
  if (!family || !Number.isInteger(port) || port < 1 || port > 65535) {
    throw Object.assign(new Error(`bad DNS upstream "${text}" (want ADDR or ADDR:PORT)`), { code: 'EINVAL' });
  }
  return { address, port, family: family as Family };
}

/** The nameservers of a resolv.conf (missing file or none listed: an empty list). */
export function readResolvConf(path = '/etc/resolv.conf'): DnsUpstream[] {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    return [];
  }
  const out: DnsUpstream[] = [];
  for (const line of text.split('\n')) {
    const m = /^\s*nameserver\s+(\S+)/.exec(line);
    if (!m) continue;
    const addr = m[1].replace(/%.*$/, ''); // drop an IPv6 zone
    const family = isIP(addr);
    if (family) out.push({ address: addr, port: 53, family: family as Family });
  }
  return out;
}

export type LookupFn = (name: string, family: Family) => Promise<string[]>;

/** getaddrinfo through Node, no AI_ADDRCONFIG / AI_V4MAPPED: what the host's resolver says. */
export const hostResolverLookup: LookupFn = (name, family) =>
  new Promise((resolve, reject) => {
    hostLookup(name, { family, all: true, hints: 0 }, (err, addresses) => {
      if (err) reject(err);
      else resolve(addresses.filter((a) => a.family === family).map((a) => a.address));
    });
  });

/** Sends one DNS answer to the guest (from the DNS address, port 53). */
export type DnsReply = (family: Family, guest: Uint8Array, guestPort: number, payload: Uint8Array) => void;

export interface DnsServerOptions {
  meter: Meter;
  /** Static entries (name → address); host.usernet.internal is added. */
  hosts: Record<string, string>;
  /** The gateway's address (what host.usernet.internal resolves to). */
  gateway: string;
  upstreams: DnsUpstream[];
  reply: DnsReply;
  lookup?: LookupFn;
  /** Per-try timeout (ms). */
  timeoutMs?: number;
  /** Queries in flight (host lookups + forwarded). */
  maxPending?: number;
}

interface Pending {
  family: Family;
  guest: Uint8Array;
  guestPort: number;
  guestId: number;
  query: Buffer;
  upstreamId: number;
  tries: number;
  upstream: DnsUpstream;
  timer: NodeJS.Timeout | null;
}

const RCODE_SERVFAIL = 2;
const FLAG_AA = 1 << 10;
const FLAG_RD = 1 << 8;
const FLAG_RA = 1 << 7;

export class DnsServer {
  private readonly stage: Stage;
  private readonly hosts = new Map<string, string[]>();
  private readonly upstreams: DnsUpstream[];
  private readonly lookup: LookupFn;
  private readonly timeoutMs: number;
  private readonly maxPending: number;
  private readonly forwarded = new Map<number, Pending>();
  private inFlight = 0;
  private sockets: Partial<Record<Family, dgram.Socket>> = {};
  private closed = false;
  private nextUpstream = 0;

  constructor(private readonly opts: DnsServerOptions) {
    this.stage = opts.meter.stage(NAT_DNS);
    this.upstreams = opts.upstreams;
    this.lookup = opts.lookup ?? hostResolverLookup;
    this.timeoutMs = opts.timeoutMs ?? 2000;
    this.maxPending = opts.maxPending ?? 512;
    this.addHost(HOST_NAME, opts.gateway);
    for (const [name, addr] of Object.entries(opts.hosts)) this.addHost(name, addr);
  }

  private addHost(name: string, addr: string): void {
    if (!isIP(addr)) {
      throw Object.assign(new Error(`bad DNS host entry ${name}=${addr}`), { code: 'EINVAL' });
    }
    const key = normalize(name);
    const list = this.hosts.get(key) ?? [];
    list.push(addr);
    this.hosts.set(key, list);
  }

  get pending(): number {
    return this.inFlight;
  }

  /** A UDP payload from the guest to DNS:53. `payload` is borrowed: copied here. */
  query(family: Family, guest: Uint8Array, guestPort: number, payload: Uint8Array): void {
    if (this.closed) return;
    this.stage.pass(1, payload.length);
    if (payload.length < 12) return this.drop('short-message');
    const query = Buffer.allocUnsafe(payload.length);
    query.set(payload);
    this.stage.copied(payload.length);
    let msg: dnsPacket.Packet;
    try {
      msg = dnsPacket.decode(query);
    } catch {
      return this.drop('malformed-query');
    }
    if (msg.type === 'response') return this.drop('not-a-query');
    if (this.inFlight >= this.maxPending) return this.drop('too-many-pending');
    const guestCopy = Uint8Array.prototype.slice.call(guest) as Uint8Array;
    const id = msg.id ?? 0;
    const questions = msg.questions ?? [];
    const q = questions.length === 1 ? questions[0] : null;
    if (!q || (q.class !== undefined && q.class !== 'IN') || ((msg.flags ?? 0) >> 11) & 0xf) {
      // Several questions, another class or opcode: upstream knows what to do with it.
      return this.forward(family, guestCopy, guestPort, id, query);
    }
    const name = normalize(q.name);
    const fixed = this.hosts.get(name);
    if (fixed) {
      return this.answer(family, guestCopy, guestPort, msg, q, fixed.filter((a) => matchesType(a, q.type)), 0);
    }
    if (q.type === 'A' || q.type === 'AAAA') {
      const fam: Family = q.type === 'A' ? 4 : 6;
      this.inFlight++;
      this.lookup(name, fam).then(
        (addrs) => {
          this.inFlight--;
          if (this.closed) return;
          if (addrs.length === 0) this.forward(family, guestCopy, guestPort, id, query);
          else this.answer(family, guestCopy, guestPort, msg, q, addrs, 0);
        },
        () => {
          // ENOTFOUND, ENODATA, EAI_AGAIN…: let the nameservers give the authoritative answer.
          this.inFlight--;
          if (!this.closed) this.forward(family, guestCopy, guestPort, id, query);
        },
      );
      return;
    }
    this.forward(family, guestCopy, guestPort, id, query);
  }

  private answer(family: Family, guest: Uint8Array, guestPort: number, msg: dnsPacket.Packet, q: dnsPacket.Question, addrs: string[], rcode: number): void {
    const answers: dnsPacket.Answer[] = [];
    for (const a of addrs.slice(0, MAX_ANSWERS)) {
      answers.push({ type: isIP(a) === 4 ? 'A' : 'AAAA', name: q.name, class: 'IN', ttl: ANSWER_TTL, data: a });
    }
    this.send(family, guest, guestPort, {
      id: msg.id,
      type: 'response',
      flags: ((msg.flags ?? 0) & FLAG_RD) | FLAG_RA | (rcode === 0 ? FLAG_AA : 0) | rcode,
      questions: [q],
      answers,
    });
  }

  private fail(family: Family, guest: Uint8Array, guestPort: number, query: Buffer, rcode: number): void {
    // Echo the question back with the error code; no need to decode again.
    const out = Buffer.from(query);
    out[2] = 0x80 | (query[2] & 0x79); // QR, keep opcode and RD
    out[3] = 0x80 | rcode; // RA + rcode
    out.writeUInt16BE(0, 6);
    out.writeUInt16BE(0, 8);
    out.writeUInt16BE(0, 10);
    // Cut after the question section when we can find its end; else send the header only.
    const end = questionEnd(out);
    const reply = end > 0 ? out.subarray(0, end) : out.subarray(0, 12);
    if (end <= 0) reply.writeUInt16BE(0, 4);
    this.opts.reply(family, guest, guestPort, reply);
  }

  private send(family: Family, guest: Uint8Array, guestPort: number, packet: dnsPacket.Packet): void {
    let bytes: Buffer;
    try {
      bytes = dnsPacket.encode(packet);
    } catch (err) {
      logOnce('nat.dns.encode', 'DNS answer could not be encoded', { err: String(err) });
      return this.drop('encode-failed');
    }
    this.opts.reply(family, guest, guestPort, bytes);
  }

  private forward(family: Family, guest: Uint8Array, guestPort: number, guestId: number, query: Buffer): void {
    if (this.upstreams.length === 0) {
      this.drop('no-upstream');
      return this.fail(family, guest, guestPort, query, RCODE_SERVFAIL);
    }
    if (this.inFlight >= this.maxPending) {
      this.drop('too-many-pending');
      return this.fail(family, guest, guestPort, query, RCODE_SERVFAIL);
    }
    let upstreamId = randomInt(0x10000);
    for (let i = 0; this.forwarded.has(upstreamId) && i < 0x10000; i++) upstreamId = (upstreamId + 1) & 0xffff;
    const p: Pending = {
      family,
      guest,
      guestPort,
      guestId,
      query,
      upstreamId,
      tries: 0,
      upstream: this.upstreams[this.nextUpstream++ % this.upstreams.length],
      timer: null,
    };
    this.forwarded.set(upstreamId, p);
    this.inFlight++;
    query.writeUInt16BE(upstreamId, 0);
    this.transmit(p);
  }

  private transmit(p: Pending): void {
    p.tries++;
    const sock = this.socket(p.upstream.family);
    sock.send(p.query, p.upstream.port, p.upstream.address, (err) => {
      if (err && this.stage.dropped('upstream-send-failed')) {
        log.warn({ err: String(err), upstream: p.upstream.address }, 'DNS upstream send failed');
      }
    });
    p.timer = setTimeout(() => this.onTimeout(p), this.timeoutMs);
    p.timer.unref();
  }

  private onTimeout(p: Pending): void {
    p.timer = null;
    if (this.closed || this.forwarded.get(p.upstreamId) !== p) return;
    const maxTries = Math.max(2, this.upstreams.length);
    if (p.tries < maxTries) {
      p.upstream = this.upstreams[p.tries % this.upstreams.length];
      return this.transmit(p);
    }
    this.finish(p);
    this.drop('upstream-timeout');
    p.query.writeUInt16BE(p.guestId, 0);
    this.fail(p.family, p.guest, p.guestPort, p.query, RCODE_SERVFAIL);
  }

  private onUpstreamMessage(msg: Buffer, rinfo: dgram.RemoteInfo): void {
    if (msg.length < 12) return this.drop('short-answer');
    const p = this.forwarded.get(msg.readUInt16BE(0));
    if (!p) return this.drop('unexpected-answer');
    // Only the server we asked may answer (RFC 5452 §4.4).
    if (rinfo.port !== p.upstream.port || !sameAddress(rinfo.address, p.upstream.address)) return this.drop('answer-from-elsewhere');
    if (!(msg[2] & 0x80)) return this.drop('not-an-answer');
    this.finish(p);
    msg.writeUInt16BE(p.guestId, 0);
    this.opts.reply(p.family, p.guest, p.guestPort, msg);
  }

  private finish(p: Pending): void {
    if (p.timer) clearTimeout(p.timer);
    p.timer = null;
    this.forwarded.delete(p.upstreamId);
    this.inFlight--;
  }

  private socket(family: Family): dgram.Socket {
    let s = this.sockets[family];
    if (!s) {
      s = dgram.createSocket(family === 4 ? 'udp4' : 'udp6');
      s.on('message', (msg, rinfo) => this.onUpstreamMessage(msg, rinfo));
      s.on('error', (err) => logOnce(`nat.dns.socket.${err.message}`, 'DNS upstream socket error', { err: String(err) }));
      this.sockets[family] = s;
    }
    return s;
  }

  private drop(reason: string): void {
    if (this.stage.dropped(reason)) log.debug({ reason }, 'DNS query dropped');
  }

  close(): void {
    this.closed = true;
    for (const p of this.forwarded.values()) if (p.timer) clearTimeout(p.timer);
    this.forwarded.clear();
    for (const s of Object.values(this.sockets)) {
      try {
        s?.close();
      } catch {
        /* already closed */
      }
    }
    this.sockets = {};
  }
}

function normalize(name: string): string {
  return name.toLowerCase().replace(/\.$/, '');
}

function matchesType(addr: string, type: string): boolean {
  const fam = isIP(addr);
  return (type === 'A' && fam === 4) || (type === 'AAAA' && fam === 6) || type === 'ANY';
}

function sameAddress(a: string, b: string): boolean {
  if (a === b) return true;
  // dgram reports IPv4-mapped forms on dual-stack sockets.
  return a.replace(/^::ffff:/, '') === b.replace(/^::ffff:/, '');
}

/** Offset just past the first question of a message, or -1 when it does not parse. */
function questionEnd(m: Buffer): number {
  if (m.readUInt16BE(4) < 1) return 12;
  let off = 12;
  while (off < m.length) {
    const len = m[off];
    if (len === 0) {
      off += 1;
      break;
    }
    if (len & 0xc0) return -1;
    off += 1 + len;
  }
  off += 4;
  if (off > m.length) return -1;
  m.writeUInt16BE(1, 4);
  return off;
}
