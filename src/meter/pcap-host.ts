/**
 * HostCapture (`usernet run --pcap-host FILE`): the host side of the NAT as frames, so Wireshark
 * shows both sides of the translation — the guest's packets (`--pcap`, tap point "guest") and
 * what the host network sees (tap point "host"), in one pcapng file when both go to one path.
 *
 * usernet never sees the host side's packets: its TCP connections are the kernel's, its UDP and
 * ICMP datagrams are handed to sockets. What is captured is synthesized from what crosses each
 * host socket, with the host-side addresses and ports (getsockname/getpeername):
 *
 *  TCP   a handshake (SYN, SYN-ACK, ACK) when the connect completes; a segment per write to the
 *        socket (usernet's end → the peer) carrying exactly the bytes the kernel took; a segment
 *        per range of bytes read from the socket for the first time (a retransmission towards
 *        the guest peeks again but is not captured again: the host peer sent those bytes once);
 *        FIN each way at the half-closes, RST on a reset. Sequence numbers count the bytes of
 *        each direction from an arbitrary start, acknowledgments what the other side sent so
 *        far — a consistent stream for Wireshark's analysis, not the kernel's real numbers
 *        (which no user-space program can see). Segments longer than 65,495 bytes (a TSO write)
 *        are split to fit an IPv4 packet.
 *  UDP   one datagram per sendto / recvfrom, source and destination as on the host.
 *  ICMP  the echo request as sent (the identifier is the ping socket's, as the kernel sends it)
 *        and the reply as received.
 *
 * Ethernet addresses are made up (02:00:00:00:00:01 for usernet's end, …:02 for the peer).
 * Cost: nothing unless --pcap-host is given (UDP/ICMP test `hostCapturing.on`; the TCP module's
 * host sockets are wrapped only then); with it, one metered copy per packet into a scratch frame
 * (stage `pcap.host`) and the writer's own copy (`pcap.write`). Forwarded connections (hostfwd)
 * are not captured on the host side.
 */
import { globalMeter, copyBytes, type Meter, type Stage } from './meter';
import { DIRECTION_INBOUND, DIRECTION_OUTBOUND, type CaptureDirection, type CaptureWriter } from './pcap';
import { PCAP_HOST } from './stages';
import { plainFrame, type Frame } from '../link/frame';
import { internetChecksum, onesSum } from '../wire/checksum';
import type { HostConnectError, HostConnectOptions, HostSocket, HostSocketEvents, HostSocketFactory } from '../backends/nat/tcp-host';
import { hostEndpoints } from '../backends/nat/host-endpoints';
import * as native from '../native';

const MAX_IP_PAYLOAD = 65535 - 20;
const MAX_TCP_PAYLOAD = MAX_IP_PAYLOAD - 20;
const LOCAL_MAC = [0x02, 0, 0, 0, 0, 0x01];
const REMOTE_MAC = [0x02, 0, 0, 0, 0, 0x02];
const TCP_FIN = 0x01;
const TCP_SYN = 0x02;
const TCP_RST = 0x04;
const TCP_PSH = 0x08;
const TCP_ACK = 0x10;

/** The boolean the UDP and ICMP modules test; `capture` is set whenever `on` is. */
export const hostCapturing: { on: boolean; capture: HostCapture | null } = { on: false, capture: null };

interface Endpoint {
  addr: Uint8Array;
  port: number;
}

function parseEndpoint(text: string): Endpoint | null {
  const i = text.lastIndexOf(':');
  const a = (i < 0 ? text : text.slice(0, i)).split('.').map(Number);
  if (a.length !== 4 || a.some((x) => !(x >= 0 && x <= 255))) return null;
  return { addr: Uint8Array.from(a), port: i < 0 ? 0 : Number(text.slice(i + 1)) };
}

/** A TCP connection's host side as it is being captured. */
class TcpCaptureState {
  local: Endpoint | null = null;
  remote: Endpoint | null = null;
  /** Next sequence number each way (usernet's end → peer, peer → usernet's end). */
  outSeq = 0x10000000;
  inSeq = 0x20000000;
  /** Host → guest: bytes consumed so far, and captured so far (absolute stream offsets). */
  consumed = 0;
  captured = 0;
  opened = false;
  finOut = false;
  finIn = false;
  /** The peer's FIN is shown once every byte before it was captured: its stream offset, or -1. */
  finInAt = -1;
}

export class HostCapture {
  readonly iface: number;
  private readonly stage: Stage;
  private readonly buf = new Uint8Array(14 + 20 + 20 + MAX_TCP_PAYLOAD + 40);
  private readonly frame: Frame = plainFrame(new Uint8Array(0));
  private readonly one: Frame[] = [this.frame];
  private readonly localOf = new WeakMap<object, Endpoint | null>();
  private ipId = 1;
  private closed = false;

  constructor(
    private readonly writer: CaptureWriter,
    opts: { meter?: Meter; name?: string } = {},
  ) {
    this.iface = writer.addInterface(opts.name ?? 'host');
    this.stage = (opts.meter ?? globalMeter).stage(PCAP_HOST);
  }

  /** Start capturing (UDP/ICMP hooks and wrapped TCP sockets write from now on). */
  start(): void {
    hostCapturing.capture = this;
    hostCapturing.on = true;
  }

  stop(): void {
    this.closed = true;
    if (hostCapturing.capture === this) {
      hostCapturing.on = false;
      hostCapturing.capture = null;
    }
  }

  // ---- TCP -------------------------------------------------------------------------------

  /** A host-socket factory whose sockets are captured (the TCP module's `hosts`). */
  wrap(inner: HostSocketFactory): HostSocketFactory {
    return {
      connect: (opts: HostConnectOptions, events: HostSocketEvents): HostSocket => {
        const st = new TcpCaptureState();
        let sock: HostSocket | null = null;
        const spy: HostSocketEvents = {
          hostConnected: () => {
            this.tcpOpen(sock, st);
            events.hostConnected();
          },
          hostConnectFailed: (err: HostConnectError) => events.hostConnectFailed(err),
          hostReadable: () => events.hostReadable(),
          hostWritable: () => events.hostWritable(),
          hostEnd: () => {
            // every byte before the FIN is in the socket now: the stream ends after them
            if (sock) this.tcpFin(sock, st, false, st.consumed + sock.buffered);
            events.hostEnd();
          },
          hostError: (code: string) => {
            if (sock) this.tcpRst(sock, st, false);
            events.hostError(code);
          },
        };
        sock = inner.connect(opts, spy);
        return new CapturedHostSocket(sock, this, st);
      },
    };
  }

  /** @internal */
  tcpOpen(sock: HostSocket | null, st: TcpCaptureState): void {
    if (st.opened || this.closed || !sock) return;
    const e = hostEndpoints(sock);
    if (!e) return;
    st.local = parseEndpoint(e.local);
    st.remote = parseEndpoint(e.remote);
    if (!st.local || !st.remote) return;
    st.opened = true;
    this.tcpSegment(st, true, TCP_SYN, st.outSeq - 1, 0, null, 0, 0);
    this.tcpSegment(st, false, TCP_SYN | TCP_ACK, st.inSeq - 1, st.outSeq, null, 0, 0);
    this.tcpSegment(st, true, TCP_ACK, st.outSeq, st.inSeq, null, 0, 0);
  }

  /** @internal bytes the kernel took from usernet (usernet's end → peer). */
  tcpWrite(sock: HostSocket, st: TcpCaptureState, src: Uint8Array, off: number, len: number): void {
    if (!st.opened) this.tcpOpen(sock, st);
    if (!st.opened || this.closed) return;
    for (let done = 0; done < len; ) {
      const n = Math.min(MAX_TCP_PAYLOAD, len - done);
      this.tcpSegment(st, true, TCP_ACK | TCP_PSH, st.outSeq, st.inSeq, src, off + done, n);
      st.outSeq = (st.outSeq + n) >>> 0;
      done += n;
    }
  }

  /** @internal bytes read from the socket at stream offset `at` (peer → usernet's end). */
  tcpRead(sock: HostSocket, st: TcpCaptureState, at: number, dst: Uint8Array, dstOff: number, len: number): void {
    if (!st.opened) this.tcpOpen(sock, st);
    if (!st.opened || this.closed) return;
    const end = at + len;
    if (end <= st.captured) return; // read again (a retransmission): captured already
    const from = Math.max(at, st.captured);
    for (let p = from; p < end; ) {
      const n = Math.min(MAX_TCP_PAYLOAD, end - p);
      this.tcpSegment(st, false, TCP_ACK | TCP_PSH, st.inSeq, st.outSeq, dst, dstOff + (p - at), n);
      st.inSeq = (st.inSeq + n) >>> 0;
      p += n;
    }
    st.captured = end;
    if (st.finInAt >= 0 && st.captured >= st.finInAt) this.tcpFin(sock, st, false, st.finInAt);
  }

  /**
   * @internal a FIN: `out` usernet's end shut down writing; else the peer's end of stream at
   * offset `at`, shown once the bytes before it were captured (or at close, `force`).
   */
  tcpFin(sock: HostSocket, st: TcpCaptureState, out: boolean, at = 0, force = false): void {
    if (!st.opened) this.tcpOpen(sock, st);
    if (!st.opened || this.closed || (out ? st.finOut : st.finIn)) return;
    if (out) {
      st.finOut = true;
      this.tcpSegment(st, true, TCP_FIN | TCP_ACK, st.outSeq, st.inSeq, null, 0, 0);
      st.outSeq = (st.outSeq + 1) >>> 0;
      return;
    }
    if (st.captured < at && !force) {
      st.finInAt = at;
      return;
    }
    st.finIn = true;
    this.tcpSegment(st, false, TCP_FIN | TCP_ACK, st.inSeq, st.outSeq, null, 0, 0);
    st.inSeq = (st.inSeq + 1) >>> 0;
  }

  /** @internal a reset (usernet's, or the peer's). */
  tcpRst(_sock: HostSocket, st: TcpCaptureState, out: boolean): void {
    if (!st.opened || this.closed) return;
    if (out) this.tcpSegment(st, true, TCP_RST | TCP_ACK, st.outSeq, st.inSeq, null, 0, 0);
    else this.tcpSegment(st, false, TCP_RST | TCP_ACK, st.inSeq, st.outSeq, null, 0, 0);
  }

  private tcpSegment(st: TcpCaptureState, out: boolean, flags: number, seq: number, ack: number, data: Uint8Array | null, off: number, len: number): void {
    const src = out ? st.local! : st.remote!;
    const dst = out ? st.remote! : st.local!;
    const b = this.buf;
    const l4 = this.ipHeader(out, src.addr, dst.addr, 6, 20 + len);
    b[l4] = src.port >>> 8;
    b[l4 + 1] = src.port & 0xff;
    b[l4 + 2] = dst.port >>> 8;
    b[l4 + 3] = dst.port & 0xff;
    put32(b, l4 + 4, seq >>> 0);
    put32(b, l4 + 8, flags & TCP_ACK ? ack >>> 0 : 0);
    b[l4 + 12] = 5 << 4;
    b[l4 + 13] = flags;
    b[l4 + 14] = 0xff; // window: not the kernel's (unknown here); large so analysis stays quiet
    b[l4 + 15] = 0xff;
    b[l4 + 16] = b[l4 + 17] = b[l4 + 18] = b[l4 + 19] = 0;
    if (data && len > 0) copyBytes(this.stage, data.subarray(off, off + len), b, l4 + 20);
    this.l4Checksum(l4, 20 + len, 6, l4 + 16);
    this.emit(l4 + 20 + len, out ? DIRECTION_OUTBOUND : DIRECTION_INBOUND);
  }

  // ---- UDP and ICMP ------------------------------------------------------------------------

  /** A datagram through a host UDP socket `fd`: `out` sent to `peer`:`port`, else received from it. */
  udp(fd: native.OwnedFd, out: boolean, peer: Uint8Array, port: number, payload: Uint8Array): void {
    if (this.closed || peer.length !== 4) return;
    const local = this.localEndpoint(fd);
    if (!local) return;
    const len = Math.min(payload.length, MAX_IP_PAYLOAD - 8);
    const b = this.buf;
    const src = out ? local.addr : peer;
    const dst = out ? peer : local.addr;
    const l4 = this.ipHeader(out, src, dst, 17, 8 + len);
    const sp = out ? local.port : port;
    const dp = out ? port : local.port;
    b[l4] = sp >>> 8;
    b[l4 + 1] = sp & 0xff;
    b[l4 + 2] = dp >>> 8;
    b[l4 + 3] = dp & 0xff;
    b[l4 + 4] = (8 + len) >>> 8;
    b[l4 + 5] = (8 + len) & 0xff;
    b[l4 + 6] = b[l4 + 7] = 0;
    copyBytes(this.stage, payload.subarray(0, len), b, l4 + 8);
    this.l4Checksum(l4, 8 + len, 17, l4 + 6);
    this.emit(l4 + 8 + len, out ? DIRECTION_OUTBOUND : DIRECTION_INBOUND);
  }

  /** An ICMP message through a ping socket `fd` (the identifier is the socket's port). */
  icmp(fd: native.OwnedFd | null, out: boolean, peer: Uint8Array, message: Uint8Array): void {
    if (this.closed || peer.length !== 4 || message.length < 8) return;
    const local = fd ? this.localEndpoint(fd) : null;
    const me = local?.addr ?? Uint8Array.of(127, 0, 0, 1);
    const len = Math.min(message.length, MAX_IP_PAYLOAD);
    const l4 = this.ipHeader(out, out ? me : peer, out ? peer : me, 1, len);
    const b = this.buf;
    copyBytes(this.stage, message.subarray(0, len), b, l4);
    if (local) {
      b[l4 + 4] = local.port >>> 8;
      b[l4 + 5] = local.port & 0xff;
    }
    b[l4 + 2] = b[l4 + 3] = 0;
    const c = internetChecksum(b, l4, len);
    b[l4 + 2] = c >>> 8;
    b[l4 + 3] = c & 0xff;
    this.emit(l4 + len, out ? DIRECTION_OUTBOUND : DIRECTION_INBOUND);
  }

  private localEndpoint(fd: native.OwnedFd): Endpoint | null {
    let e = this.localOf.get(fd);
    if (e === undefined) {
      e = null;
      try {
        const a = native.getSockName(fd);
        if (a && a.family === 4) {
          e = parseEndpoint(`${a.address}:${a.port}`);
          // a socket bound to any address: show it as the loopback (what a local peer sees)
          if (e && e.addr.every((x) => x === 0)) e.addr = Uint8Array.of(127, 0, 0, 1);
        }
      } catch {
        e = null;
      }
      this.localOf.set(fd, e);
    }
    return e;
  }

  // ---- frames ------------------------------------------------------------------------------

  /** Ethernet + IPv4 header into the scratch frame; returns the transport offset. */
  private ipHeader(out: boolean, src: Uint8Array, dst: Uint8Array, proto: number, l4len: number): number {
    const b = this.buf;
    const dmac = out ? REMOTE_MAC : LOCAL_MAC;
    const smac = out ? LOCAL_MAC : REMOTE_MAC;
    for (let i = 0; i < 6; i++) {
      b[i] = dmac[i];
      b[6 + i] = smac[i];
    }
    b[12] = 0x08;
    b[13] = 0x00;
    const o = 14;
    const total = 20 + l4len;
    const id = this.ipId;
    this.ipId = (id + 1) & 0xffff;
    b[o] = 0x45;
    b[o + 1] = 0;
    b[o + 2] = total >>> 8;
    b[o + 3] = total & 0xff;
    b[o + 4] = id >>> 8;
    b[o + 5] = id & 0xff;
    b[o + 6] = 0x40;
    b[o + 7] = 0;
    b[o + 8] = 64;
    b[o + 9] = proto;
    b[o + 10] = b[o + 11] = 0;
    for (let i = 0; i < 4; i++) {
      b[o + 12 + i] = src[i];
      b[o + 16 + i] = dst[i];
    }
    const c = internetChecksum(b, o, 20);
    b[o + 10] = c >>> 8;
    b[o + 11] = c & 0xff;
    return o + 20;
  }

  private l4Checksum(l4: number, len: number, proto: number, field: number): void {
    const b = this.buf;
    const pseudo = onesSum(b, 14 + 12, 8) + proto + len;
    let c = internetChecksum(b, l4, len, pseudo);
    if (c === 0 && proto === 17) c = 0xffff;
    b[field] = c >>> 8;
    b[field + 1] = c & 0xff;
  }

  private emit(len: number, dir: CaptureDirection): void {
    this.stage.pass(1, len);
    this.frame.data = this.buf.subarray(0, len);
    this.writer.write(this.iface, dir, this.one);
  }
}

function put32(b: Uint8Array, o: number, v: number): void {
  b[o] = (v >>> 24) & 0xff;
  b[o + 1] = (v >>> 16) & 0xff;
  b[o + 2] = (v >>> 8) & 0xff;
  b[o + 3] = v & 0xff;
}

/** A host socket whose traffic is also captured (everything else is the inner socket's). */
class CapturedHostSocket implements HostSocket {
  constructor(
    private readonly inner: HostSocket,
    private readonly cap: HostCapture,
    private readonly st: TcpCaptureState,
  ) {}

  get buffered(): number {
    return this.inner.buffered;
  }

  peek(offset: number, dst: Uint8Array, dstOff: number, len: number): number {
    const n = this.inner.peek(offset, dst, dstOff, len);
    if (n > 0) this.cap.tcpRead(this.inner, this.st, this.st.consumed + offset, dst, dstOff, n);
    return n;
  }

  consume(n: number): void {
    this.inner.consume(n);
    if (n > 0) this.st.consumed += n;
  }

  setReadLimit(n: number): void {
    this.inner.setReadLimit(n);
  }

  write(src: Uint8Array, off: number, len: number): number {
    const n = this.inner.write(src, off, len);
    if (n > 0) this.cap.tcpWrite(this.inner, this.st, src, off, n);
    return n;
  }

  get writeSpace(): number {
    return this.inner.writeSpace;
  }

  get writeCapacity(): number {
    return this.inner.writeCapacity;
  }

  get writePending(): number {
    return this.inner.writePending;
  }

  shutdownWrite(): void {
    this.cap.tcpFin(this.inner, this.st, true);
    this.inner.shutdownWrite();
  }

  keepAlive(idleS: number, intervalS: number, count: number): boolean {
    return this.inner.keepAlive?.(idleS, intervalS, count) ?? false;
  }

  reset(): void {
    this.cap.tcpRst(this.inner, this.st, true);
    this.inner.reset();
  }

  close(): void {
    if (this.st.finInAt >= 0) this.cap.tcpFin(this.inner, this.st, false, this.st.finInAt, true);
    this.inner.close();
  }

  /** The inner socket's ends (for the meter's views). */
  endpoints(): { local: string; remote: string; kind: string } | null {
    return hostEndpoints(this.inner);
  }
}
