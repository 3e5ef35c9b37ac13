/**
 * Shared by the VM tests of the guest-facing transports (vhost-user, qemu-socket): a NAT stack
 * (with TCP) behind a guest Port, a host HTTP server with a random file, the guest command that
 * checks the usual things, and the QEMU arguments of each transport.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createNatStack, type NatStack } from '../../src/backends/nat';
import { createTcpModule } from '../../src/backends/nat/tcp';
import { isOffloadAware } from '../../src/devices/virtio/net-offloads';
import { join, type Port } from '../../src/link/port';
import type { Meter } from '../../src/meter/meter';
import { vhostUserQemuArgs } from '../../src/transports/vhost-user';

/** Join a fresh NAT stack to `port`; it follows the port's offloads and closes with it. */
export async function natBehind(port: Port & { once?(e: 'close', l: () => void): unknown }, meter: Meter): Promise<NatStack> {
  const stack = await createNatStack({
    meter,
    config: { dnsHosts: { 'files.test': '10.0.2.2' } },
    tcp: (ctx) => createTcpModule(ctx),
  });
  if (isOffloadAware(port)) {
    const apply = (): void => stack.setOffloads(port.offloads.guestCsum, port.offloads.guestTso4);
    apply();
    port.on('offloads', apply);
  }
  stack.followGuest(port);
  join(port, stack);
  port.once?.('close', () => void stack.close());
  return stack;
}

export interface FileServer {
  port: number;
  sha256: string;
  size: number;
  /** Connections open right now (a guest's flows end → this drops). */
  readonly open: number;
  close(): Promise<void>;
}

/** An HTTP server on 127.0.0.1 serving /blob (random bytes). */
export async function fileServer(size = 4 << 20): Promise<FileServer> {
  const blob = randomBytes(size);
  const sha256 = createHash('sha256').update(blob).digest('hex');
  const chunk = blob.subarray(0, 64 << 10);
  const server: Server = createServer((req, res) => {
    if (req.url === '/endless') {
      // never ends: written as fast as the client takes it, until the connection goes
      const more = (): void => {
        while (!res.destroyed && res.write(chunk));
        if (!res.destroyed) res.once('drain', more);
      };
      more();
      return;
    }
    if (req.url !== '/blob') {
      res.statusCode = 404;
      res.end();
      return;
    }
    res.setHeader('content-length', String(blob.length));
    res.end(blob);
  });
  let open = 0;
  server.on('connection', (sock) => {
    open++;
    sock.once('close', () => open--);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as AddressInfo).port,
    sha256,
    size,
    get open() {
      return open;
    },
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

/** Lease, ping the gateway, resolve a name, fetch the file: one line per fact for the test. */
export function checkCommand(httpPort: number): string {
  return [
    'set -e',
    "echo addr=$(ip -4 -o addr show eth0 | awk '{print $4}')",
    'ping -c 2 -W 5 10.0.2.2 >/dev/null && echo ping=ok',
    "echo resolved=$(nslookup files.test 10.0.2.3 2>/dev/null | awk '/^Address/ {a=$NF} END {print a}')",
    `wget -q -O /tmp/blob http://files.test:${httpPort}/blob`,
    "echo sha256=$(sha256sum /tmp/blob | cut -d' ' -f1)",
  ].join('\n');
}

export function parseFacts(output: string): Record<string, string> {
  const facts: Record<string, string> = {};
  for (const line of output.split('\n')) {
    const m = /^(\w+)=(.*)$/.exec(line.trim());
    if (m) facts[m[1]] = m[2];
  }
  return facts;
}

/** QEMU arguments for a virtio-net-pci on usernet's vhost-user socket (QEMU 7.2 under TCG: INTx). */
export function vhostUserNicArgs(path: string, opts: { msix?: boolean; reconnect?: boolean; mac?: string } = {}): string[] {
  return vhostUserQemuArgs(path, { mac: opts.mac, reconnectSeconds: opts.reconnect ? 1 : undefined, qemuMajor: opts.msix ? 11 : 7 });
}
