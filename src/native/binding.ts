/**
 * Loading the compiled addon (native/build/Release/usernet.node) and its raw, positional
 * interface. Nothing outside src/native should use `addon` directly: the sibling modules wrap
 * each call with types, defaults and option objects.
 *
 * The file is looked up from this module's directory upwards (so it works from src/ under
 * ts-node and from dist/src/ after tsc), or taken from $USERNET_NATIVE_ADDON. When it is not
 * built, importing still succeeds (constants and types stay usable) and the first native call
 * throws an Error with code 'ERR_USERNET_NATIVE_MISSING' saying how to build it.
 */
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';

/** An fd the addon opened; closed by close(), by garbage collection, or handed away by release(). */
export interface OwnedFd {
  /** The descriptor number, or -1 once closed or released. */
  readonly fd: number;
  /** Close now (idempotent). Closes a bound FdWatcher first. */
  close(): void;
  /** Give up ownership and return the number (e.g. for `new net.Socket({ fd })`); throws EBADF if closed. */
  release(): number;
}

/** Anything the native calls accept as an fd: an OwnedFd or a raw descriptor number. */
export type FdLike = OwnedFd | number;

export interface NativeFdWatcher {
  start(events: number): void;
  stop(): void;
  close(): void;
  readonly active: boolean;
  readonly closed: boolean;
  readonly fd: number;
}

export interface NativeErrorQueueEntry {
  errno: number;
  errnoName: string | null;
  origin: number;
  type: number;
  code: number;
  info: number;
  eeData: number;
  bytes: number;
  truncated: boolean;
  offender: string | null;
  destination: { family: 4 | 6; address: string; port: number } | null;
  ttl: number;
}

export interface NativeAddon {
  OwnedFd: new (fd: number) => OwnedFd;
  FdWatcher: new (fd: FdLike, callback: (events: number, status: number) => void) => NativeFdWatcher;
  setNonBlocking(fd: FdLike, on: boolean): void;
  nativeStats(): { ownedFds: number; watchers: number; mappings: number; mappedBytes: number };

  read(fd: FdLike, buf: ArrayBufferView): number;
  write(fd: FdLike, buf: ArrayBufferView): number;
  readv(fd: FdLike, bufs: ArrayBufferView[]): number;
  writev(fd: FdLike, bufs: ArrayBufferView[]): number;
  readFrames(fd: FdLike, slab: Uint8Array, slotSize: number, maxFrames: number, lengths: Int32Array,
    status: Int32Array | null | undefined): number;
  writeFrames(fd: FdLike, parts: readonly (ArrayBufferView | null | undefined)[], partsPerFrame: number,
    frameCount: number, status: Int32Array | null | undefined): number;

  tapOpen(name: string, flags: number, netns: string | null): { fd: OwnedFd; name: string };
  tapFeatures(fd: FdLike | null): number;
  tapSetVnetHdrSize(fd: FdLike, size: number): void;
  tapGetVnetHdrSize(fd: FdLike): number;
  tapSetOffload(fd: FdLike, flags: number): void;
  tapInfo(fd: FdLike): { name: string; flags: number };

  unixListen(path: string, backlog: number, type: number): OwnedFd;
  unixAccept(fd: FdLike): OwnedFd | null;
  unixConnect(path: string, type: number): OwnedFd;
  unixDgram(bindPath: string | null, connectPath: string | null): OwnedFd;
  unixSocketPair(type: number): [OwnedFd, OwnedFd];
  unixSendTo(fd: FdLike, buf: ArrayBufferView, path: string): number;
  unixRecvFrom(fd: FdLike, buf: ArrayBufferView): { bytes: number; path: string | null } | null;
  sendmsg(fd: FdLike, data: ArrayBufferView | ArrayBufferView[], fds: readonly FdLike[] | null): number;
  recvmsg(fd: FdLike, buf: ArrayBufferView | ArrayBufferView[]): { bytes: number; fds: OwnedFd[]; flags: number } | null;

  mmap(fd: FdLike, offset: number, length: number): ArrayBuffer;
  munmap(buffer: ArrayBuffer): void;
  memfdCreate(name: string, size: number): OwnedFd;
  eventfdCreate(initval: number, semaphore: boolean): OwnedFd;
  eventfdRead(fd: FdLike): number;
  eventfdWrite(fd: FdLike, value: number): boolean;
  PAGE_SIZE: number;

  socketInNetns(netns: string | null, family: number, type: number, protocol: number): OwnedFd;
  icmpSocket(family: number, netns: string | null, allowRaw: boolean): { fd: OwnedFd; kind: 'ping' | 'raw' };
  udpSocket(family: number, address: string | null, port: number, netns: string | null, reuseAddr: boolean): OwnedFd;
  tcpConnect(address: string | Uint8Array, port: number, ttl: number, recvErr: boolean, bindAddress: string | null,
    bindPort: number, netns: string | null, reusePort: boolean): OwnedFd;
  tcpListen(address: string, port: number, backlog: number, netns: string | null): OwnedFd;
  setsockoptInt(fd: FdLike, level: number, name: number, value: number): void;
  getsockoptInt(fd: FdLike, level: number, name: number): number;
  getSocketError(fd: FdLike): number;
  getSockName(fd: FdLike): unknown;
  getPeerName(fd: FdLike): unknown;
  errnoName(errno: number): string;
  sendTo(fd: FdLike, buf: ArrayBufferView, address: string | Uint8Array | null, port: number, ttl: number): number;
  recvFrom(fd: FdLike, buf: ArrayBufferView, meta: Int32Array | null, flags: number): number;
  recv(fd: FdLike, buf: ArrayBufferView, flags: number): number;
  readErrorQueue(fd: FdLike, buf: ArrayBufferView | null): NativeErrorQueueEntry | null;

  [constant: string]: unknown;
}

const ADDON_RELATIVE = join('native', 'build', 'Release', 'usernet.node');

/** Where the addon file is (or would be). */
export function addonPath(): string {
  const fromEnv = process.env.USERNET_NATIVE_ADDON;
  if (fromEnv) return resolve(fromEnv);
  let dir = __dirname;
  for (;;) {
    const candidate = join(dir, ADDON_RELATIVE);
    if (existsSync(candidate)) return candidate;
    const up = dirname(dir);
    if (up === dir) break;
    dir = up;
  }
  return resolve(__dirname, '..', '..', ADDON_RELATIVE);
}

function load(): { addon: NativeAddon; error: Error | null } {
  const path = addonPath();
  try {
    // eslint-disable-next-line @typescript-eslint/no-var-requires
    return { addon: require(path) as NativeAddon, error: null };
  } catch (cause) {
    const error = Object.assign(
      new Error(
        `usernet native addon is not available at ${path}: build it with \`make native\` ` +
          `(cd native && node-gyp rebuild). Cause: ${(cause as Error).message}`,
      ),
      { code: 'ERR_USERNET_NATIVE_MISSING', cause },
    );
    const missing = new Proxy({} as NativeAddon, {
      get(): never {
        throw error;
      },
    });
    return { addon: missing, error };
  }
}

const loaded = load();

/** The raw addon (a throwing stand-in when it is not built). */
export const addon: NativeAddon = loaded.addon;

/** Null when the addon loaded; otherwise the error every native call will throw. */
export const addonLoadError: Error | null = loaded.error;
