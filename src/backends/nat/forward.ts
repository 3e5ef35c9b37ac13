/**
 * PortForwarder: host → guest port forwards (QEMU's `hostfwd=tcp:HOSTADDR:HOSTPORT-GUESTADDR:
 * GUESTPORT`), set from `config.hostForwards` at start and added, removed and listed at run
 * time (the control socket's `hostfwd add|remove|list`).
 *
 * TCP: a listening socket on the host address and port (port 0 = any free port, reported
 * back). Each accepted connection becomes a guest-bound connection of the TCP module: we send a
 * SYN to the guest's address and port from the gateway address, complete the handshake, and
 * from then on it is an ordinary re-terminated connection (same flow control, same
 * retransmission, same half-close rules). The listener uses `pauseOnConnect` so no byte is read
 * from the host client before the guest accepted, and `allowHalfOpen` so either side may
 * finish sending first. A guest that refuses (RST) or never answers resets the host client.
 * The source port towards the guest is the host client's own port when that tuple is free
 * (so the guest's logs show something meaningful), else one from 49152–65535.
 *
 * Source address (`config.forwardSource`, issue 8 "inbound source address"): 'gateway' (the
 * default, QEMU's behaviour) shows every forwarded connection as coming from the gateway;
 * 'client' shows the real client's address where the guest can be shown it — an IPv4 address
 * outside the guest's network that is not a martian (AddressPolicy.guestSource4) and not the
 * host itself (loopback, or one of the host's own interface addresses: those stay the gateway,
 * which is where the guest reaches the host). The guest's replies to that address find the
 * forwarded connection in the flow table (keyed by the guest's 4-tuple), so they go back over
 * the accepted socket, never out as a new NAT flow.
 *
 * TCP simultaneous open through a forward (RFC 5382 REQ-2): the listener carries SO_REUSEPORT
 * (set once it listens), so that a guest connection *from* the forwarded guest port can leave
 * from the forward's host port (tcp.ts asks `listenerFor`; the host socket binds next to the
 * listener with SO_REUSEPORT too). A peer that connects to the host port at the same moment
 * then meets that connecting socket in the kernel (SYN_SENT matches the 4-tuple before any
 * listener does): both SYNs cross, both ends complete the handshake. Only sockets that set
 * SO_REUSEPORT themselves (as root here, or the same user) may share the port; a second plain
 * listener still gets EADDRINUSE.
 *
 * UDP rules are the UDP module's business (its mapping table owns the socket); this class only
 * routes them there, so one list covers both protocols.
 *
 * Guest address: empty means "the guest" — the address resolver given (the first DHCP lease, or
 * the address the stack learned), else `config.dhcpStart`, as QEMU does.
 */
import net from 'node:net';
import os from 'node:os';
import type { HostForward } from './config';
import type { NatContext } from './context';
import { AddressPolicy, ipv4Bytes } from './policy';
import { parseIpv4 } from '../../wire/address';
import { NodeHostSocket } from './tcp-host-node';
import type { TcpModule } from './tcp';
import { log, logOnce } from '../../log';
import * as native from '../../native';

/** What the UDP module offers for forwards (see udp.ts). */
export interface UdpForwarding {
  addForward(rule: HostForward): Promise<void>;
  removeForward(hostAddress: string, hostPort: number): Promise<boolean>;
  listForwards(): HostForward[];
}

export interface PortForwarderOptions {
  ctx: NatContext;
  tcp: TcpModule;
  udp?: UdpForwarding | null;
  /** The guest's current address (text), when the stack knows it; null = not yet known. */
  guestAddress?: () => string | null;
}

interface TcpListener {
  rule: HostForward;
  server: net.Server;
  /** Host connections accepted and not yet closed (for stats). */
  accepted: number;
}

export class PortForwarder {
  private readonly tcpListeners: TcpListener[] = [];
  private closed = false;
  /** Accepted host connections that could not be forwarded (no guest address, table full). */
  refused = 0;

  private readonly policy: AddressPolicy;
  private readonly gatewayBytes: Uint8Array;

  constructor(private readonly opts: PortForwarderOptions) {
    this.policy = new AddressPolicy(opts.ctx.config);
    this.gatewayBytes = ipv4Bytes(parseIpv4(opts.ctx.config.gateway));
    opts.tcp.listenerFor = (guest, guestPort) => this.listenerFor(guest, guestPort);
  }

  /** Open every forward of `config.hostForwards`. Rejects with the first failure. */
  async start(): Promise<void> {
    for (const rule of this.opts.ctx.config.hostForwards) await this.add(rule);
  }

  /**
   * Add a forward; resolves to the rule as installed (host port filled in when it was 0).
   * Errors: EADDRINUSE (already forwarded, or the port is taken), EINVAL (bad address).
   */
  async add(rule: HostForward): Promise<HostForward> {
    if (this.closed) throw Object.assign(new Error('port forwarder is closed'), { code: 'ECANCELED' });
    if (rule.protocol === 'udp') {
      const udp = this.opts.udp;
      if (!udp) throw Object.assign(new Error('UDP forwarding is not available'), { code: 'ENOTSUP' });
      await udp.addForward(rule);
      const actual = udp.listForwards().find((f) => f.hostAddress === rule.hostAddress && (rule.hostPort === 0 || f.hostPort === rule.hostPort));
      return actual ?? { ...rule };
    }
    if (rule.hostPort !== 0 && this.findTcp(rule.hostAddress, rule.hostPort)) {
      throw Object.assign(new Error(`tcp:${rule.hostAddress}:${rule.hostPort} is already forwarded`), { code: 'EADDRINUSE' });
    }
    if (rule.guestAddress && Number.isNaN(parseIpv4Safe(rule.guestAddress))) {
      throw Object.assign(new Error(`bad guest address "${rule.guestAddress}" (IPv4 expected)`), { code: 'EINVAL' });
    }
    const listener: TcpListener = { rule: { ...rule }, server: null as unknown as net.Server, accepted: 0 };
    const server = net.createServer({ pauseOnConnect: true, allowHalfOpen: true }, (sock) => this.accept(listener, sock));
    listener.server = server;
    await new Promise<void>((resolve, reject) => {
      const onError = (err: Error): void => {
        server.off('listening', onListening);
        reject(err);
      };
      const onListening = (): void => {
        server.off('error', onError);
        resolve();
      };
      server.once('error', onError);
      server.once('listening', onListening);
      server.listen({ host: rule.hostAddress || '127.0.0.1', port: rule.hostPort, exclusive: true });
    });
    server.on('error', (err) => log.warn({ err, rule: listener.rule }, 'port forward listener error'));
    shareListeningPort(server);
    const addr = server.address();
    if (addr && typeof addr === 'object') listener.rule.hostPort = addr.port;
    this.tcpListeners.push(listener);
    log.info({ rule: listener.rule }, 'port forward added');
    return { ...listener.rule };
  }

  /** Remove a forward by protocol, host address and port. True if one was there. */
  async remove(protocol: 'tcp' | 'udp', hostAddress: string, hostPort: number): Promise<boolean> {
    if (protocol === 'udp') return this.opts.udp ? this.opts.udp.removeForward(hostAddress, hostPort) : false;
    const l = this.findTcp(hostAddress, hostPort);
    if (!l) return false;
    this.tcpListeners.splice(this.tcpListeners.indexOf(l), 1);
    // Established forwarded connections stay up (as QEMU does); only the listener goes.
    stopListening(l.server);
    log.info({ rule: l.rule }, 'port forward removed');
    return true;
  }

  /** Every forward, TCP first, as installed (host ports filled in). */
  list(): HostForward[] {
    const out = this.tcpListeners.map((l) => ({ ...l.rule }));
    if (this.opts.udp) out.push(...this.opts.udp.listForwards());
    return out;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const l of this.tcpListeners.splice(0)) stopListening(l.server);
  }

  /**
   * The host address and port a guest connection from `guest:guestPort` leaves from: the
   * listening port of the forward that leads to that guest port, or null (tcp.ts asks once per
   * guest SYN).
   */
  listenerFor(guest: Uint8Array, guestPort: number): { address: string; port: number } | null {
    if (guest.length !== 4) return null;
    for (const l of this.tcpListeners) {
      if (l.rule.guestPort !== guestPort) continue;
      const text = l.rule.guestAddress || this.opts.guestAddress?.() || this.opts.ctx.config.dhcpStart;
      const g = parseIpv4Safe(text);
      if (Number.isNaN(g) || g !== (((guest[0] << 24) | (guest[1] << 16) | (guest[2] << 8) | guest[3]) >>> 0)) continue;
      return { address: l.rule.hostAddress || '127.0.0.1', port: l.rule.hostPort };
    }
    return null;
  }

  /** Who an accepted connection comes from, as the guest sees it (`config.forwardSource`). */
  private sourceFor(sock: net.Socket): Uint8Array {
    if (this.opts.ctx.config.forwardSource !== 'client') return this.gatewayBytes;
    let text = sock.remoteAddress ?? '';
    if (text.startsWith('::ffff:')) text = text.slice(7);
    const n = parseIpv4Safe(text);
    if (Number.isNaN(n) || this.policy.guestSource4(n) !== n || isHostAddress(text, sock.localAddress)) return this.gatewayBytes;
    return ipv4Bytes(n);
  }

  private findTcp(hostAddress: string, hostPort: number): TcpListener | undefined {
    const want = hostAddress || '127.0.0.1';
    return this.tcpListeners.find((l) => (l.rule.hostAddress || '127.0.0.1') === want && l.rule.hostPort === hostPort);
  }

  private accept(l: TcpListener, sock: net.Socket): void {
    if (this.closed) {
      sock.destroy();
      return;
    }
    const ctx = this.opts.ctx;
    const guestText = l.rule.guestAddress || this.opts.guestAddress?.() || ctx.config.dhcpStart;
    const guest = parseIpv4Safe(guestText);
    if (Number.isNaN(guest)) {
      this.refused++;
      sock.destroy();
      return;
    }
    const tcp = this.opts.tcp;
    const c = tcp.openToGuest(4, ipv4Bytes(guest), l.rule.guestPort, this.sourceFor(sock), sock.remotePort ?? 0, (events) =>
      NodeHostSocket.adopt(sock, events, tcp.nodeOptions),
    );
    if (!c) {
      this.refused++;
      sock.destroy();
      return;
    }
    l.accepted++;
  }
}

/**
 * SO_REUSEPORT on a forward's listening socket, so the guest's own connections from the
 * forwarded port can bind the same host port (simultaneous open, see the file comment). Set
 * after listen: the kernel checks it when the other socket binds. Without it (no addon, no
 * handle fd) forwards work as before and only simultaneous open is lost.
 */
function shareListeningPort(server: net.Server): void {
  const fd = (server as unknown as { _handle?: { fd?: number } })._handle?.fd;
  try {
    if (typeof fd !== 'number' || fd < 0) throw new Error('no listening fd');
    native.setsockoptInt(fd, native.SOL_SOCKET, native.SO_REUSEPORT, 1);
  } catch (err) {
    logOnce('nat.forward.reuseport', 'SO_REUSEPORT not set on a port-forward listener: TCP simultaneous open through forwards is off', { err: String(err) });
  }
}

/**
 * Stop accepting at once. (net.Server#close's callback waits for every accepted connection to
 * end; those belong to the TCP module, which closes them on its own schedule.)
 */
function stopListening(server: net.Server): void {
  server.close();
  server.unref();
}

/** Is `address` one of this host's own (the local end of the connection, or an interface's)? */
function isHostAddress(address: string, local: string | undefined): boolean {
  if (local && (local === address || local === `::ffff:${address}`)) return true;
  for (const list of Object.values(os.networkInterfaces())) {
    for (const a of list ?? []) if (a.address === address) return true;
  }
  return false;
}

function parseIpv4Safe(text: string): number {
  try {
    const n = parseIpv4(text);
    return typeof n === 'number' && Number.isFinite(n) ? n : NaN;
  } catch {
    return NaN;
  }
}
