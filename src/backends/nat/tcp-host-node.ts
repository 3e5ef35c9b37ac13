/**
 * NodeHostSocket: the host side of a TCP connection on a Node `net.Socket` (see tcp-host.ts for
 * the contract). Node can neither peek at a socket nor tell how much of a write the kernel took,
 * so this adapter keeps two bounded rings per connection:
 *
 *  rx (host → guest)  bytes read from the host and not yet acknowledged by the guest — what
 *                     `peek` serves for the first send and every retransmission. Reads go
 *                     straight into the ring: the socket uses Node's `onread` option, whose
 *                     buffer generator hands libuv the ring's free region at the tail, so the
 *                     kernel copies into the ring (one copy) and building a frame copies out
 *                     (the second). The ring starts small and doubles (up to `rxMax`) while the
 *                     guest's window is larger than it; reading stops (readStop) when the ring
 *                     is full or holds as much as the guest's window allows, which closes the
 *                     host peer's TCP window.
 *                     Whenever reading stops, the socket's read buffer is parked on a small
 *                     shared buffer (PARK): the ring may then grow (or be dropped) without libuv
 *                     holding a stale view, and the one read after a resume lands in PARK and is
 *                     copied into the ring (an extra copy of at most 16 KiB per stall, counted).
 *                     A socket accepted by a net.Server (port forwarding) has no `onread`
 *                     option: its 'data' chunks are copied into the ring (counted).
 *  tx (guest → host)  guest bytes accepted but not yet written by Node: Node's `write` keeps a
 *                     reference to the buffer until libuv wrote it, and guest frames are only
 *                     borrowed, so accepted bytes are copied here (one copy), written from here
 *                     (the kernel's copy), and freed when the write completes. Its free space is
 *                     the window advertised to the guest, so the guest never sends more than
 *                     this small tail ahead of the kernel. It starts at 64 KiB (allocated on
 *                     the first guest byte) and doubles, up to `txCapacity` (1 MiB), while the
 *                     guest keeps it more than 3/4 full — request/response connections stay
 *                     small, bulk uploads get a window worth a few event-loop turns.
 *
 * A native fd adapter (MSG_PEEK with SO_PEEK_OFF, partial writes) needs neither ring.
 */
import net from 'node:net';
import type { Stage } from '../../meter/meter';
import { ByteRing, type Region } from './tcp-byte-ring';
import { setKeepAlive, type HostConnectOptions, type HostSocket, type HostSocketEvents, type HostSocketFactory } from './tcp-host';

/** Where reads go while the rx ring cannot take them (shared: read callbacks never overlap). */
const PARK = new Uint8Array(16 * 1024);
/** How long a closed socket may take to hand its last bytes to the kernel. */
const CLOSE_GRACE_MS = 30_000;
/** A Node 'data' chunk is at most this big (libuv's read buffer for streams). */
const MAX_CHUNK = 64 * 1024;

export interface NodeHostSocketOptions {
  /** Meter stages: bytes read from / written to host sockets, with their copies. */
  readStage: Stage;
  writeStage: Stage;
  /** rx ring: first size and most it may grow to. */
  rxInitial?: number;
  rxMax?: number;
  /** Most the tx tail may grow to (the largest window advertised to the guest). */
  txCapacity?: number;
}

export class NodeHostSocket implements HostSocket {
  private sock: net.Socket | null = null;
  /** While there is no socket yet (a native connect in progress): how to cancel it. */
  onAbandon: (() => void) | null = null;
  private rx: ByteRing | null = null;
  private tx: ByteRing | null = null;
  private readonly rxInitial: number;
  private readonly rxMax: number;
  private readonly txInitial: number;
  private readonly txMax: number;
  private readonly readStage: Stage;
  private readonly writeStage: Stage;
  /** FIFO of the lengths of writes Node has not completed yet. */
  private readonly pendingWrites: number[] = [];
  private pendingHead = 0;
  private readLimit = 0;
  /** Reading is stopped (by us). */
  private paused = false;
  /** The socket's read buffer is PARK (not a ring region). */
  private parked = true;
  /** Inside the onread callback: socket calls are deferred to its return value. */
  private inRead = false;
  private connected = false;
  private writeShut = false;
  private dead = false;
  /** The socket's fd when we made it (openFd); else read from Node's handle. */
  private fd = -1;
  /** Data arrives as 'data' chunks (accepted sockets) instead of through onread. */
  private chunkMode = false;
  private readonly region: Region = { offset: 0, length: 0 };

  private constructor(private readonly events: HostSocketEvents, opts: NodeHostSocketOptions) {
    this.readStage = opts.readStage;
    this.writeStage = opts.writeStage;
    this.rxMax = opts.rxMax ?? 1 << 20;
    this.rxInitial = Math.min(opts.rxInitial ?? 64 * 1024, this.rxMax);
    this.txMax = opts.txCapacity ?? 1024 * 1024;
    this.txInitial = Math.min(64 * 1024, this.txMax);
  }

  /** Start a non-blocking connect (TTL and bind-port options are not available in Node). */
  static connect(opts: HostConnectOptions, events: HostSocketEvents, o: NodeHostSocketOptions): NodeHostSocket {
    const h = new NodeHostSocket(events, o);
    const connectOpts: net.TcpNetConnectOpts & { onread: unknown } = {
      host: opts.host,
      port: opts.port,
      family: opts.family,
      allowHalfOpen: true,
      noDelay: true,
      onread: { buffer: () => h.nextBuffer(), callback: (n: number) => h.onRead(n) },
    };
    if (opts.localAddress) connectOpts.localAddress = opts.localAddress;
    if (opts.localPort) connectOpts.localPort = opts.localPort;
    if (opts.keepAliveMs) {
      connectOpts.keepAlive = true;
      connectOpts.keepAliveInitialDelay = opts.keepAliveMs;
    }
    const sock = net.connect(connectOpts);
    h.attach(sock);
    sock.once('connect', () => {
      h.connected = true;
      h.events.hostConnected();
    });
    return h;
  }

  /**
   * An adapter whose socket comes later (`openFd`): the native connect (TTL, IP_RECVERR) runs
   * first, then the connected fd is handed to Node.
   */
  static pending(events: HostSocketEvents, o: NodeHostSocketOptions): NodeHostSocket {
    return new NodeHostSocket(events, o);
  }

  /** Wrap a connected TCP fd (ownership passes to Node). Reading starts at once. */
  openFd(fd: number, keepAliveMs = 0): void {
    this.onAbandon = null;
    this.fd = fd;
    const opts: net.SocketConstructorOpts & { onread: unknown } = {
      fd,
      readable: true,
      writable: true,
      allowHalfOpen: true,
      onread: { buffer: () => this.nextBuffer(), callback: (n: number) => this.onRead(n) },
    };
    const sock = new net.Socket(opts);
    sock.setNoDelay(true);
    if (keepAliveMs > 0) sock.setKeepAlive(true, keepAliveMs);
    this.connected = true;
    this.attach(sock);
    if (this.paused) sock.pause();
  }

  /**
   * Take over a connected socket (from a net.Server created with `pauseOnConnect: true` and
   * `allowHalfOpen: true`, so no byte is read before the guest side is ready).
   */
  static adopt(sock: net.Socket, events: HostSocketEvents, o: NodeHostSocketOptions): NodeHostSocket {
    const h = new NodeHostSocket(events, o);
    h.chunkMode = true;
    h.connected = true;
    h.paused = true;
    sock.setNoDelay(true);
    sock.on('data', (chunk: Buffer) => h.onChunk(chunk));
    h.attach(sock);
    return h;
  }

  private attach(sock: net.Socket): void {
    this.sock = sock;
    sock.on('end', () => {
      if (!this.dead) this.events.hostEnd();
    });
    sock.on('error', (err: NodeJS.ErrnoException) => {
      if (this.dead) return;
      this.dead = true;
      const code = err.code ?? 'EIO';
      if (this.connected) this.events.hostError(code);
      else this.events.hostConnectFailed({ code });
    });
    sock.on('close', () => {
      if (this.dead) return;
      // Closed without an error after both directions ended: nothing more to report.
      this.dead = true;
    });
  }

  // ---- host → guest --------------------------------------------------------------------

  get buffered(): number {
    return this.rx ? this.rx.length : 0;
  }

  peek(offset: number, dst: Uint8Array, dstOff: number, len: number): number {
    return this.rx ? this.rx.copyOut(offset, dst, dstOff, len, this.readStage) : 0;
  }

  consume(n: number): void {
    if (!this.rx) return;
    this.rx.consume(n);
    this.maybeResume();
  }

  setReadLimit(n: number): void {
    this.readLimit = n;
    if (this.shouldPause()) this.pauseNow();
    else this.maybeResume();
  }

  /** onread buffer generator: where libuv's next read goes. */
  private nextBuffer(): Uint8Array {
    if (this.paused || !this.rx) {
      this.parked = true;
      return PARK;
    }
    const r = this.rx.writable(this.region);
    if (r.length === 0) {
      this.parked = true;
      return PARK;
    }
    this.parked = false;
    return this.rx.buf.subarray(r.offset, r.offset + r.length);
  }

  /** onread callback: `n` bytes are in the buffer `nextBuffer` returned last. */
  private onRead(n: number): boolean {
    if (this.dead) return false;
    this.readStage.pass(1, n);
    this.readStage.copied(n); // kernel → ring (or PARK)
    if (this.parked) {
      this.ensureRx(n);
      this.rx!.append(PARK, 0, n, this.readStage);
    } else this.rx!.commit(n);
    this.inRead = true;
    this.events.hostReadable();
    this.inRead = false;
    if (this.shouldPause()) {
      // Stop reading; the generator (called right after us) parks the read buffer, so the
      // ring may grow now that libuv no longer points into it.
      this.paused = true;
      this.growIfWindowAllows();
      if (!this.shouldPause()) {
        this.paused = false;
        return true;
      }
      return false;
    }
    return true;
  }

  /** 'data' chunk of an adopted socket. */
  private onChunk(chunk: Buffer): void {
    if (this.dead) return;
    this.readStage.pass(1, chunk.length);
    this.readStage.copied(chunk.length); // kernel → Node's chunk
    this.ensureRx(chunk.length);
    this.rx!.append(chunk, 0, chunk.length, this.readStage);
    this.events.hostReadable();
    if (this.shouldPause()) {
      this.growIfWindowAllows();
      if (this.shouldPause()) this.pauseNow();
    }
  }

  private ensureRx(atLeast: number): void {
    if (this.rx) {
      if (this.rx.free < atLeast) this.rx.grow(Math.max(this.rx.capacity * 2, this.rx.length + atLeast), this.readStage);
      return;
    }
    let cap = this.rxInitial;
    while (cap < atLeast + this.reserve()) cap *= 2;
    this.rx = new ByteRing(cap);
  }

  /** Free space a resumed read may need at once. */
  private reserve(): number {
    return this.chunkMode ? MAX_CHUNK : PARK.length;
  }

  private shouldPause(): boolean {
    if (!this.rx) return this.readLimit <= 0 && this.chunkMode;
    return this.rx.free < this.reserve() || this.rx.length >= this.readLimit;
  }

  private growIfWindowAllows(): void {
    const rx = this.rx;
    if (!rx || rx.free >= this.reserve() || rx.capacity >= this.rxMax) return;
    if (this.readLimit <= rx.capacity) return;
    rx.grow(Math.min(this.rxMax, rx.capacity * 2), this.readStage);
  }

  private pauseNow(): void {
    if (this.paused || this.dead || this.inRead || !this.sock) {
      this.paused = true;
      return;
    }
    this.paused = true;
    this.sock.pause();
  }

  private maybeResume(): void {
    if (!this.paused || this.dead || this.inRead || !this.sock) return;
    if (this.shouldPause()) {
      // Growing is safe only while libuv's read buffer is parked (not a view into the ring).
      if (this.parked || this.chunkMode) this.growIfWindowAllows();
      if (this.shouldPause()) return;
    }
    this.paused = false;
    // onread sockets: the read buffer is PARK (parked when reading stopped); the next read
    // lands there and is copied into the ring, which has at least PARK's size free.
    this.sock.resume();
  }

  // ---- guest → host --------------------------------------------------------------------

  write(src: Uint8Array, off: number, len: number): number {
    const sock = this.sock;
    if (this.writeShut || this.dead || len <= 0 || !sock) return 0;
    if (!this.tx) this.tx = new ByteRing(this.txInitial);
    const tx = this.tx;
    const n = Math.min(len, tx.free);
    if (n <= 0) return 0;
    const cap = tx.capacity;
    const idx = tx.tail % cap;
    const first = Math.min(n, cap - idx);
    tx.append(src, off, n, this.writeStage);
    this.writeStage.pass(1, n);
    if (first < n) sock.cork();
    this.pendingWrites.push(first);
    sock.write(tx.buf.subarray(idx, idx + first), this.onWritten);
    if (first < n) {
      this.pendingWrites.push(n - first);
      sock.write(tx.buf.subarray(0, n - first), this.onWritten);
      sock.uncork();
    }
    // A guest that keeps the tail more than 3/4 full wants a bigger window: double it (the
    // pending writes keep their views of the old array; positions carry over).
    if (tx.free * 4 < tx.capacity && tx.capacity < this.txMax) tx.grow(Math.min(this.txMax, tx.capacity * 2), this.writeStage);
    return n;
  }

  private readonly onWritten = (err?: Error | null): void => {
    if (err || !this.tx) return; // the 'error' event reports it
    const n = this.pendingWrites[this.pendingHead++];
    if (this.pendingHead > 64 && this.pendingHead * 2 > this.pendingWrites.length) {
      this.pendingWrites.splice(0, this.pendingHead);
      this.pendingHead = 0;
    }
    this.tx.consume(n);
    this.writeStage.copied(n); // our tail → kernel
    if (!this.dead) this.events.hostWritable();
  };

  get writeSpace(): number {
    if (this.writeShut || this.dead) return 0;
    return this.tx ? this.tx.free : this.txInitial;
  }

  get writeCapacity(): number {
    return this.txMax;
  }

  get writePending(): number {
    return this.tx ? this.tx.length : 0;
  }

  shutdownWrite(): void {
    if (this.writeShut || this.dead) return;
    this.writeShut = true;
    this.sock?.end();
  }

  keepAlive(idleS: number, intervalS: number, count: number): boolean {
    if (this.dead || !this.sock) return false;
    const fd = this.fd >= 0 ? this.fd : (this.sock as unknown as { _handle?: { fd?: number } })._handle?.fd;
    return typeof fd === 'number' && fd >= 0 && setKeepAlive(fd, idleS, intervalS, count);
  }

  // ---- teardown ------------------------------------------------------------------------

  reset(): void {
    if (this.dead) return;
    this.dead = true;
    this.rx = null;
    if (!this.sock) this.abandon();
    else if (this.connected) this.sock.resetAndDestroy();
    else this.sock.destroy();
  }

  /**
   * Close after a clean end of both directions. Bytes Node still holds for the kernel are
   * written first (end() flushes, then the socket closes itself); a host peer that never reads
   * them gets the socket destroyed after a grace period.
   */
  close(): void {
    if (this.dead) return;
    this.dead = true;
    this.rx = null;
    const sock = this.sock;
    if (!sock) {
      this.abandon();
      return;
    }
    if (this.tx && this.tx.length > 0 && !sock.destroyed) {
      sock.end();
      const t = setTimeout(() => sock.destroy(), CLOSE_GRACE_MS);
      t.unref();
      sock.once('close', () => clearTimeout(t));
    } else sock.destroy();
  }

  private abandon(): void {
    const f = this.onAbandon;
    this.onAbandon = null;
    f?.();
  }
}

/** The factory the TCP module uses by default. */
export function nodeHostSocketFactory(o: NodeHostSocketOptions): HostSocketFactory {
  return { connect: (opts, events) => NodeHostSocket.connect(opts, events, o) };
}
