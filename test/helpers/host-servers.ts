/**
 * Servers a NAT test starts on the host's loopback for the guest to reach through the gateway
 * address: an HTTP server that streams deterministic bytes (GET /blob/SIZE) and hashes uploads
 * (PUT|POST /upload → {"bytes":N,"sha256":"..."}), and iperf3 on a free port. Everything is
 * bound to 127.0.0.1 and closed by the returned `close` (iperf3 killed by PID).
 *
 * The byte stream is a fixed 1 MiB xorshift pattern repeated, so `expectedSha256(size)` can be
 * computed locally without keeping the data anywhere.
 */
import http from 'node:http';
import net from 'node:net';
import { createHash } from 'node:crypto';
import { spawn, type ChildProcess } from 'node:child_process';
import type { AddressInfo } from 'node:net';

const PATTERN = (() => {
  const b = new Uint8Array(1 << 20);
  let x = 0x2545f491;
  for (let i = 0; i < b.length; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b[i] = x & 0xff;
    b[i + 1] = (x >>> 8) & 0xff;
    b[i + 2] = (x >>> 16) & 0xff;
    b[i + 3] = (x >>> 24) & 0xff;
  }
  return Buffer.from(b.buffer);
})();

/** sha256 of the first `size` bytes of the pattern stream. */
export function expectedSha256(size: number): string {
  const h = createHash('sha256');
  for (let off = 0; off < size; off += PATTERN.length) h.update(PATTERN.subarray(0, Math.min(PATTERN.length, size - off)));
  return h.digest('hex');
}

/** Write the first `size` bytes of the pattern stream to `out` (a file stream etc.). */
export async function writePattern(size: number, write: (chunk: Buffer) => Promise<void> | void): Promise<void> {
  for (let off = 0; off < size; off += PATTERN.length) await write(PATTERN.subarray(0, Math.min(PATTERN.length, size - off)));
}

/** Send `size` filler bytes (0x5a) on `sock`, minding its backpressure, then end it. */
export function sendFiller(sock: net.Socket, size: number): void {
  const chunk = Buffer.alloc(Math.min(size, 1 << 20), 0x5a);
  let left = size;
  const pump = (): void => {
    while (left > 0) {
      const n = Math.min(left, chunk.length);
      left -= n;
      if (!sock.write(chunk.subarray(0, n))) return void sock.once('drain', pump);
    }
    sock.end();
  };
  pump();
}

export interface BlobServer {
  port: number;
  /** Uploads seen: bytes and sha256 of each. */
  uploads: { bytes: number; sha256: string }[];
  close(): Promise<void>;
}

export async function startBlobServer(host = '127.0.0.1'): Promise<BlobServer> {
  const uploads: { bytes: number; sha256: string }[] = [];
  const server = http.createServer((req, res) => {
    const m = /^\/blob\/(\d+)$/.exec(req.url ?? '');
    if (req.method === 'GET' && m) {
      const size = Number(m[1]);
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(size) });
      let off = 0;
      const pump = (): void => {
        while (off < size) {
          const n = Math.min(PATTERN.length, size - off);
          off += n;
          if (!res.write(PATTERN.subarray(0, n))) {
            res.once('drain', pump);
            return;
          }
        }
        res.end();
      };
      pump();
      return;
    }
    if ((req.method === 'PUT' || req.method === 'POST') && (req.url ?? '').startsWith('/upload')) {
      const h = createHash('sha256');
      let bytes = 0;
      req.on('data', (d: Buffer) => {
        h.update(d);
        bytes += d.length;
      });
      req.on('end', () => {
        const r = { bytes, sha256: h.digest('hex') };
        uploads.push(r);
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify(r) + '\n');
      });
      return;
    }
    res.writeHead(404);
    res.end();
  });
  await new Promise<void>((resolve) => server.listen(0, host, resolve));
  return {
    port: (server.address() as AddressInfo).port,
    uploads,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** A TCP port free on 127.0.0.1 right now. */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((resolve) => s.listen(0, host, resolve));
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}

export interface Iperf3Server {
  port: number;
  proc: ChildProcess;
  close(): Promise<void>;
}

/**
 * `iperf3 -s` bound to 127.0.0.1 on a free port, in the host namespace or (through `ip netns
 * exec`, which execs in place, so the PID is iperf3's) in `netns`. Resolves once it listens.
 */
export async function startIperf3Server(netns: string | null = null): Promise<Iperf3Server> {
  const port = await freePort();
  const argv = ['iperf3', '-s', '-B', '127.0.0.1', '-p', String(port), '--forceflush'];
  const full = netns ? ['ip', 'netns', 'exec', netns, ...argv] : argv;
  const proc = spawn(full[0], full.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
  proc.on('error', () => {});
  let out = '';
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`iperf3 -s did not start: ${out}`)), 10_000);
    const onData = (d: Buffer): void => {
      out += d.toString();
      if (out.includes('Server listening')) {
        clearTimeout(timer);
        resolve();
      }
    };
    proc.stdout?.on('data', onData);
    proc.stderr?.on('data', onData);
    proc.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`iperf3 -s exited (${code}): ${out}`));
    });
  });
  return {
    port,
    proc,
    close: async () => {
      if (proc.exitCode !== null || proc.signalCode !== null || !proc.pid) return;
      const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
      process.kill(proc.pid, 'SIGTERM');
      const t = setTimeout(() => proc.pid && process.kill(proc.pid, 'SIGKILL'), 3000);
      await exited;
      clearTimeout(t);
    },
  };
}
