/**
 * DHCPv4 messages (RFC 2131 §2, options per RFC 2132), carried in UDP 67/68:
 *
 *    0 op (1 request, 2 reply)  1 htype (1 Ethernet)  2 hlen (6)  3 hops   4-7 xid
 *    8-9 secs   10-11 flags (0x8000 broadcast, RFC 2131 §2)   12 ciaddr  16 yiaddr  20 siaddr
 *    24 giaddr  28-43 chaddr (16)  44-107 sname (64)  108-235 file (128)
 *    236-239 magic cookie 99.130.83.99 (RFC 2131 §3, RFC 2132 §2)   240.. options
 *
 * Options are code, length, data, except Pad (0) and End (255) which are one byte (RFC 2132
 * §3.1-3.2). `DhcpRepr` models the options a DHCP server and client of a NAT need; every other
 * option is kept raw in `otherOptions`, and `optionOrder` remembers the order parse met them, so
 * a parsed message re-emits exactly (up to the padding after End, which `emit` does not write:
 * BOOTP's 300-byte minimum, RFC 1542 §2.1, is the sender's choice). Option overload (52, RFC
 * 2132 §9.3: options inside sname/file) is not supported: sname and file are emitted zeroed and
 * ignored on parse. Long options split over several instances (RFC 3396) are not joined; emit
 * never writes an option longer than 255 bytes (lists are cut).
 *
 * Absent options are `null` (lists: empty). IPv4 addresses are uint32 numbers.
 */
import { wireError, type WireError } from './error';
import { assignFields, copyField, get16, get32, needRoom, put16, put32, WireView, type FieldsOf } from './view';

export const DHCP_SERVER_PORT = 67;
export const DHCP_CLIENT_PORT = 68;
export const DHCP_FIXED_LEN = 236;
/** Fixed part plus magic cookie: where options start. */
export const DHCP_OPTIONS_OFFSET = 240;
export const DHCP_MAGIC_COOKIE = 0x63825363;
/** BOOTP's minimum message (RFC 1542 §2.1); pad replies to it. */
export const BOOTP_MIN_LEN = 300;
export const DHCP_BROADCAST_FLAG = 0x8000;

export const BOOTREQUEST = 1;
export const BOOTREPLY = 2;

/** Message types (option 53, RFC 2132 §9.6). */
export const DHCP_DISCOVER = 1;
export const DHCP_OFFER = 2;
export const DHCP_REQUEST = 3;
export const DHCP_DECLINE = 4;
export const DHCP_ACK = 5;
export const DHCP_NAK = 6;
export const DHCP_RELEASE = 7;
export const DHCP_INFORM = 8;

/** Option codes (RFC 2132). */
export const DHCP_OPT_PAD = 0;
export const DHCP_OPT_SUBNET_MASK = 1;
export const DHCP_OPT_ROUTER = 3;
export const DHCP_OPT_DNS = 6;
export const DHCP_OPT_HOSTNAME = 12;
export const DHCP_OPT_DOMAIN_NAME = 15;
export const DHCP_OPT_MTU = 26;
export const DHCP_OPT_BROADCAST = 28;
export const DHCP_OPT_REQUESTED_IP = 50;
export const DHCP_OPT_LEASE_TIME = 51;
export const DHCP_OPT_OVERLOAD = 52;
export const DHCP_OPT_MESSAGE_TYPE = 53;
export const DHCP_OPT_SERVER_ID = 54;
export const DHCP_OPT_PARAMETER_LIST = 55;
export const DHCP_OPT_MESSAGE = 56;
export const DHCP_OPT_MAX_MESSAGE_SIZE = 57;
export const DHCP_OPT_RENEWAL_TIME = 58;
export const DHCP_OPT_REBINDING_TIME = 59;
export const DHCP_OPT_VENDOR_CLASS = 60;
export const DHCP_OPT_CLIENT_ID = 61;
export const DHCP_OPT_END = 255;

const E_TRUNCATED = wireError('truncated', 'dhcp', 'message shorter than 240 bytes');
const E_COOKIE = wireError('unsupported', 'dhcp', 'no DHCP magic cookie (plain BOOTP)');
const E_OPTION = wireError('bad-option', 'dhcp', 'malformed option');

export class DhcpMessage extends WireView {
  check(): WireError | null {
    if (!this.inBuffer() || this.byteLength < DHCP_OPTIONS_OFFSET) return E_TRUNCATED;
    if (get32(this.buffer, this.offset + DHCP_FIXED_LEN) !== DHCP_MAGIC_COOKIE) return E_COOKIE;
    return null;
  }

  get op(): number {
    return this.buffer[this.offset];
  }
  get htype(): number {
    return this.buffer[this.offset + 1];
  }
  get hlen(): number {
    return this.buffer[this.offset + 2];
  }
  get hops(): number {
    return this.buffer[this.offset + 3];
  }
  get xid(): number {
    return get32(this.buffer, this.offset + 4);
  }
  get secs(): number {
    return get16(this.buffer, this.offset + 8);
  }
  get flags(): number {
    return get16(this.buffer, this.offset + 10);
  }
  get broadcast(): boolean {
    return (this.buffer[this.offset + 10] & 0x80) !== 0;
  }
  get ciaddr(): number {
    return get32(this.buffer, this.offset + 12);
  }
  get yiaddr(): number {
    return get32(this.buffer, this.offset + 16);
  }
  get siaddr(): number {
    return get32(this.buffer, this.offset + 20);
  }
  get giaddr(): number {
    return get32(this.buffer, this.offset + 24);
  }
  /** Client hardware address field, all 16 bytes (a view; the MAC is the first `hlen`). */
  get chaddr(): Uint8Array {
    return this.buffer.subarray(this.offset + 28, this.offset + 44);
  }
  get magicCookie(): number {
    return get32(this.buffer, this.offset + DHCP_FIXED_LEN);
  }
  /** Absolute offset of the first option. */
  get optionsOffset(): number {
    return this.offset + DHCP_OPTIONS_OFFSET;
  }

  /**
   * Absolute offset of the first instance of option `code`'s length byte (the data follows it),
   * or -1 when absent or the list is malformed before it. No allocation.
   */
  findOption(code: number): number {
    const b = this.buffer;
    const end = this.offset + this.byteLength;
    let i = this.offset + DHCP_OPTIONS_OFFSET;
    while (i < end) {
      const c = b[i];
      if (c === DHCP_OPT_END) return -1;
      if (c === DHCP_OPT_PAD) {
        i++;
        continue;
      }
      if (i + 2 > end || i + 2 + b[i + 1] > end) return -1;
      if (c === code) return i + 1;
      i += 2 + b[i + 1];
    }
    return -1;
  }
}

/** An option DhcpRepr does not model, kept as bytes. */
export interface DhcpRawOption {
  code: number;
  data: Uint8Array;
}

export class DhcpRepr {
  op = BOOTREQUEST;
  htype = 1;
  hlen = 6;
  hops = 0;
  xid = 0;
  secs = 0;
  flags = 0;
  ciaddr = 0;
  yiaddr = 0;
  siaddr = 0;
  giaddr = 0;
  /** All 16 bytes of the field (the MAC in the first 6). */
  chaddr: Uint8Array = new Uint8Array(16);

  /** Option 53; 0 when absent (plain BOOTP). */
  messageType = 0;
  requestedIp: number | null = null;
  serverId: number | null = null;
  /** Seconds. */
  leaseTime: number | null = null;
  renewalTime: number | null = null;
  rebindingTime: number | null = null;
  subnetMask: number | null = null;
  /** The first router of option 3 (the only one usernet sends). */
  router: number | null = null;
  dnsServers: number[] = [];
  mtu: number | null = null;
  broadcastAddress: number | null = null;
  hostname: string | null = null;
  domainName: string | null = null;
  clientId: Uint8Array | null = null;
  parameterRequestList: number[] | null = null;
  maxMessageSize: number | null = null;
  /** Options not modelled above, in the order met. */
  otherOptions: DhcpRawOption[] = [];
  /** Option codes in the order parse met them; `emit` follows it when set. */
  optionOrder: number[] | null = null;

  constructor(init?: Partial<FieldsOf<DhcpRepr>>) {
    assignFields(this, init);
  }

  /** Parse a message (runs `check()`). Allocates: DHCP is not a hot path. */
  static parse(m: DhcpMessage, out?: DhcpRepr): DhcpRepr | WireError {
    const err = m.check();
    if (err) return err;
    const b = m.buffer;
    const o = m.offset;
    const r = out ?? new DhcpRepr();
    r.op = m.op;
    r.htype = m.htype;
    r.hlen = m.hlen;
    r.hops = m.hops;
    r.xid = m.xid;
    r.secs = m.secs;
    r.flags = m.flags;
    r.ciaddr = m.ciaddr;
    r.yiaddr = m.yiaddr;
    r.siaddr = m.siaddr;
    r.giaddr = m.giaddr;
    r.chaddr = b.slice(o + 28, o + 44);
    r.messageType = 0;
    r.requestedIp = r.serverId = r.leaseTime = r.renewalTime = r.rebindingTime = null;
    r.subnetMask = r.router = r.mtu = r.broadcastAddress = r.maxMessageSize = null;
    r.dnsServers = [];
    r.hostname = r.domainName = null;
    r.clientId = null;
    r.parameterRequestList = null;
    r.otherOptions = [];
    const order: number[] = [];

    const end = o + m.byteLength;
    let i = o + DHCP_OPTIONS_OFFSET;
    while (i < end) {
      const code = b[i];
      if (code === DHCP_OPT_END) break;
      if (code === DHCP_OPT_PAD) {
        i++;
        continue;
      }
      if (i + 2 > end) return E_OPTION;
      const len = b[i + 1];
      const at = i + 2;
      if (at + len > end) return E_OPTION;
      if (!readOption(r, code, b, at, len)) return E_OPTION;
      order.push(code);
      i = at + len;
    }
    r.optionOrder = order;
    return r;
  }

  /** Options this Repr carries, as codes in emission order. */
  private effectiveOrder(): number[] {
    const present = new Set<number>();
    const add = (code: number, on: boolean): void => {
      if (on) present.add(code);
    };
    add(DHCP_OPT_MESSAGE_TYPE, this.messageType !== 0);
    add(DHCP_OPT_SERVER_ID, this.serverId !== null);
    add(DHCP_OPT_LEASE_TIME, this.leaseTime !== null);
    add(DHCP_OPT_RENEWAL_TIME, this.renewalTime !== null);
    add(DHCP_OPT_REBINDING_TIME, this.rebindingTime !== null);
    add(DHCP_OPT_SUBNET_MASK, this.subnetMask !== null);
    add(DHCP_OPT_BROADCAST, this.broadcastAddress !== null);
    add(DHCP_OPT_ROUTER, this.router !== null);
    add(DHCP_OPT_DNS, this.dnsServers.length > 0);
    add(DHCP_OPT_DOMAIN_NAME, this.domainName !== null);
    add(DHCP_OPT_MTU, this.mtu !== null);
    add(DHCP_OPT_HOSTNAME, this.hostname !== null);
    add(DHCP_OPT_REQUESTED_IP, this.requestedIp !== null);
    add(DHCP_OPT_MAX_MESSAGE_SIZE, this.maxMessageSize !== null);
    add(DHCP_OPT_PARAMETER_LIST, this.parameterRequestList !== null);
    add(DHCP_OPT_CLIENT_ID, this.clientId !== null);
    const order: number[] = [];
    let raw = 0;
    const rawCount = this.otherOptions.length;
    for (const code of this.optionOrder ?? []) {
      if (present.delete(code)) order.push(code);
      else if (raw < rawCount && this.otherOptions[raw].code === code) {
        order.push(-1 - raw); // a raw option, by index
        raw++;
      }
    }
    for (const code of present) order.push(code);
    for (; raw < rawCount; raw++) order.push(-1 - raw);
    return order;
  }

  /** Bytes `emit` writes: 240, the options, End. */
  get bufferLength(): number {
    let n = DHCP_OPTIONS_OFFSET + 1;
    for (const code of this.effectiveOrder()) n += 2 + this.optionData(code).length;
    return n;
  }

  /** Write the message (sname/file zeroed, no padding after End); returns its length. */
  emit(m: DhcpMessage): number {
    const order = this.effectiveOrder();
    const datas = order.map((code) => this.optionData(code));
    let len = DHCP_OPTIONS_OFFSET + 1;
    for (const d of datas) len += 2 + d.length;
    needRoom(m, len, 'dhcp');
    const b = m.buffer;
    const o = m.offset;
    b.fill(0, o, o + DHCP_OPTIONS_OFFSET);
    b[o] = this.op;
    b[o + 1] = this.htype;
    b[o + 2] = this.hlen;
    b[o + 3] = this.hops;
    put32(b, o + 4, this.xid);
    put16(b, o + 8, this.secs);
    put16(b, o + 10, this.flags);
    put32(b, o + 12, this.ciaddr);
    put32(b, o + 16, this.yiaddr);
    put32(b, o + 20, this.siaddr);
    put32(b, o + 24, this.giaddr);
    copyField(this.chaddr, 0, b, o + 28, Math.min(16, this.chaddr.length));
    put32(b, o + DHCP_FIXED_LEN, DHCP_MAGIC_COOKIE);
    let i = o + DHCP_OPTIONS_OFFSET;
    for (let k = 0; k < order.length; k++) {
      const code = order[k] < 0 ? this.otherOptions[-1 - order[k]].code : order[k];
      const d = datas[k];
      b[i] = code;
      b[i + 1] = d.length;
      b.set(d, i + 2); // option bytes: header fields, not payload — not metered
      i += 2 + d.length;
    }
    b[i] = DHCP_OPT_END;
    return i + 1 - o;
  }

  /** The data bytes of option `code` (or raw option -1-index). */
  private optionData(code: number): Uint8Array {
    if (code < 0) return this.otherOptions[-1 - code].data.subarray(0, 255);
    switch (code) {
      case DHCP_OPT_MESSAGE_TYPE:
        return Uint8Array.of(this.messageType);
      case DHCP_OPT_SERVER_ID:
        return ipBytes([this.serverId ?? 0]);
      case DHCP_OPT_LEASE_TIME:
        return u32Bytes(this.leaseTime ?? 0);
      case DHCP_OPT_RENEWAL_TIME:
        return u32Bytes(this.renewalTime ?? 0);
      case DHCP_OPT_REBINDING_TIME:
        return u32Bytes(this.rebindingTime ?? 0);
      case DHCP_OPT_SUBNET_MASK:
        return ipBytes([this.subnetMask ?? 0]);
      case DHCP_OPT_BROADCAST:
        return ipBytes([this.broadcastAddress ?? 0]);
      case DHCP_OPT_ROUTER:
        return ipBytes([this.router ?? 0]);
      case DHCP_OPT_DNS:
        return ipBytes(this.dnsServers.slice(0, 63));
      case DHCP_OPT_DOMAIN_NAME:
        return latin1(this.domainName ?? '');
      case DHCP_OPT_HOSTNAME:
        return latin1(this.hostname ?? '');
      case DHCP_OPT_MTU:
        return Uint8Array.of((this.mtu ?? 0) >>> 8, (this.mtu ?? 0) & 0xff);
      case DHCP_OPT_MAX_MESSAGE_SIZE:
        return Uint8Array.of((this.maxMessageSize ?? 0) >>> 8, (this.maxMessageSize ?? 0) & 0xff);
      case DHCP_OPT_REQUESTED_IP:
        return ipBytes([this.requestedIp ?? 0]);
      case DHCP_OPT_PARAMETER_LIST:
        return Uint8Array.from((this.parameterRequestList ?? []).slice(0, 255));
      case DHCP_OPT_CLIENT_ID:
        return (this.clientId ?? new Uint8Array(0)).subarray(0, 255);
      default:
        return new Uint8Array(0);
    }
  }
}

/** Read one option into `r`; false when its length is wrong for its code. */
function readOption(r: DhcpRepr, code: number, b: Uint8Array, at: number, len: number): boolean {
  switch (code) {
    case DHCP_OPT_MESSAGE_TYPE:
      if (len !== 1) return false;
      r.messageType = b[at];
      return true;
    case DHCP_OPT_SERVER_ID:
    case DHCP_OPT_REQUESTED_IP:
    case DHCP_OPT_SUBNET_MASK:
    case DHCP_OPT_BROADCAST:
    case DHCP_OPT_LEASE_TIME:
    case DHCP_OPT_RENEWAL_TIME:
    case DHCP_OPT_REBINDING_TIME: {
      if (len !== 4) return false;
      const v = get32(b, at);
      if (code === DHCP_OPT_SERVER_ID) r.serverId = v;
      else if (code === DHCP_OPT_REQUESTED_IP) r.requestedIp = v;
      else if (code === DHCP_OPT_SUBNET_MASK) r.subnetMask = v;
      else if (code === DHCP_OPT_BROADCAST) r.broadcastAddress = v;
      else if (code === DHCP_OPT_LEASE_TIME) r.leaseTime = v;
      else if (code === DHCP_OPT_RENEWAL_TIME) r.renewalTime = v;
      else r.rebindingTime = v;
      return true;
    }
    case DHCP_OPT_ROUTER:
      if (len < 4 || len % 4 !== 0) return false;
      r.router = get32(b, at); // routers after the first are dropped (usernet offers one)
      return true;
    case DHCP_OPT_DNS:
      if (len < 4 || len % 4 !== 0) return false;
      r.dnsServers = [];
      for (let k = 0; k < len; k += 4) r.dnsServers.push(get32(b, at + k));
      return true;
    case DHCP_OPT_MTU:
    case DHCP_OPT_MAX_MESSAGE_SIZE:
      if (len !== 2) return false;
      if (code === DHCP_OPT_MTU) r.mtu = get16(b, at);
      else r.maxMessageSize = get16(b, at);
      return true;
    case DHCP_OPT_HOSTNAME:
      r.hostname = fromLatin1(b, at, len);
      return true;
    case DHCP_OPT_DOMAIN_NAME:
      r.domainName = fromLatin1(b, at, len);
      return true;
    case DHCP_OPT_CLIENT_ID:
      r.clientId = b.slice(at, at + len);
      return true;
    case DHCP_OPT_PARAMETER_LIST:
      r.parameterRequestList = Array.from(b.subarray(at, at + len));
      return true;
    default:
      r.otherOptions.push({ code, data: b.slice(at, at + len) });
      return true;
  }
}

function ipBytes(addrs: number[]): Uint8Array {
  const out = new Uint8Array(4 * addrs.length);
  for (let k = 0; k < addrs.length; k++) put32(out, 4 * k, addrs[k]);
  return out;
}

function u32Bytes(v: number): Uint8Array {
  const out = new Uint8Array(4);
  put32(out, 0, v);
  return out;
}

/** Strings in options are bytes; latin1 maps them 1:1 both ways (lossless), cut at 255. */
function latin1(s: string): Uint8Array {
  const n = Math.min(s.length, 255);
  const out = new Uint8Array(n);
  for (let k = 0; k < n; k++) out[k] = s.charCodeAt(k) & 0xff;
  return out;
}

function fromLatin1(b: Uint8Array, at: number, len: number): string {
  let s = '';
  for (let k = 0; k < len; k++) s += String.fromCharCode(b[at + k]);
  return s;
}
