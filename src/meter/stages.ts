/**
 * The names of the meter's stages, and what each one is: the ledger's vocabulary.
 *
 * Naming scheme — `<layer>.<part>[.<part>].<way>`:
 *
 *   layer   where in usernet the stage is, in the order a frame meets them:
 *             transport   netns.*, qemu.*, vfio-user.*   how frames reach usernet
 *             guest       guest.*                        the device model (virtio-net, RTL8139)
 *             device      device.*                       guest-memory DMA, the RTL8139 FIFO
 *             link        link.*                         Port middleware and the L2 switch
 *             nat         nat.*                          the user-mode stack (backends/nat)
 *             host        host.*                         the host sockets NAT re-terminates on
 *             tap         tap.*                          the bridged backend's tap device
 *             capture     pcap.*                         the capture writers
 *   way     which way the packet goes:
 *             .tx / .rx       inside usernet, from the guest's point of view: tx = the guest
 *                             transmits (guest → world), rx = the guest receives
 *             .read / .write  where usernet does a syscall on a file descriptor (a tap, a host
 *                             socket, a QEMU socket): named after the syscall, because that is
 *                             what a student sees in strace; the direction is in `dir` below.
 *
 * Counters per stage (meter.ts): frames, bytes (what passed the stage, headers included),
 * copies and bytes copied (each copy of packet bytes — by usernet, by the kernel in a syscall,
 * or by C), rewrites (header fields written with a new value: a translated address or port, a
 * checksum completed or adjusted, an ICMP identifier restored), drops by reason, and time (ns
 * spent in the stage's function, measured per batch where the code has a batch; inclusive of
 * nested stages — `nat.parse.tx` holds the whole stack's time for a batch).
 *
 * Copies the design expects per payload byte (checked by test/integration/meter-ledger.test.ts):
 *   NAT, guest → host   netns.tap.read 1 (kernel → slab) · host.tcp.write 1 with the fd adapter
 *                       (frame → kernel), 2 with the Node adapter (frame → ring → kernel)
 *   NAT, host → guest   host.tcp.read 1 with the fd adapter (kernel → frame, MSG_PEEK), 2 with
 *                       the Node adapter (kernel → ring → frame) · netns.tap.write 1
 *   bridged             netns.tap.read 1 · tap.write 1, and back tap.read 1 · netns.tap.write 1
 *   virtio (vhost-user) device.dma.tx 0 for a contiguous frame (a view of guest RAM), 1 for a
 *                       scattered one (Linux's TSO frames are) · device.dma.rx 1 (into RX buffers)
 *   RTL8139 (vfio-user) transmit 0 (views) · device.fifo 1 + device.dma 1 on receive
 * plus the headers of every frame (and the frames that carry no payload: ACKs) on the tap
 * stages. A retransmission to the guest copies again.
 *
 * Every stage is listed in STAGES with its direction, the function that counts it and, for the
 * teaching views (`usernet trace --explain`, docs/nat-code-path.md), what happens there and what
 * its copy moves from and to. Stage names with a per-instance part (`nat.flows.<table>`,
 * `nat.lookup.<table>`) are described by their prefix.
 */

export type StageDirection = 'tx' | 'rx' | 'both' | 'none';

export interface StageInfo {
  name: string;
  dir: StageDirection;
  layer: 'transport' | 'guest' | 'device' | 'link' | 'nat' | 'host' | 'tap' | 'capture' | 'wire';
  /** The function that counts it (what `usernet trace` prints). */
  fn: string;
  /** What one copy in this stage moves, when it copies. */
  copy?: { from: string; to: string };
  /** One line for `--explain`: what happens here and why. */
  explain: string;
}

// ---- transports -------------------------------------------------------------------------
export const NETNS_TAP_READ = 'netns.tap.read';
export const NETNS_TAP_WRITE = 'netns.tap.write';
export const QEMU_STREAM_READ = 'qemu.stream.read';
export const QEMU_STREAM_WRITE = 'qemu.stream.write';
export const QEMU_DGRAM_READ = 'qemu.dgram.read';
export const QEMU_DGRAM_WRITE = 'qemu.dgram.write';
export const VFIO_USER_MSG = 'vfio-user.msg';
export const VFIO_USER_IRQ = 'vfio-user.irq';
export const VFIO_USER_WAIT = 'vfio-user.wait';
// ---- device models ----------------------------------------------------------------------
export const GUEST_TX = 'guest.tx';
export const GUEST_RX = 'guest.rx';
export const DEVICE_DMA = 'device.dma';
export const DEVICE_DMA_TX = 'device.dma.tx';
export const DEVICE_DMA_RX = 'device.dma.rx';
export const DEVICE_FIFO = 'device.fifo';
export const DEVICE_SEGMENT = 'device.segment';
// ---- link -------------------------------------------------------------------------------
export const LINK_SWITCH = 'link.switch';
export const LINK_LOOPBACK = 'link.loopback';
export const LINK_FAULT = 'link.fault';
export const LINK_RATELIMIT = 'link.ratelimit';
// ---- NAT stack --------------------------------------------------------------------------
export const NAT_PARSE_TX = 'nat.parse.tx';
export const NAT_IP_TX = 'nat.ip.tx';
export const NAT_IP_REASSEMBLY = 'nat.ip.reassembly';
export const NAT_LOCAL = 'nat.local';
export const NAT_ARP = 'nat.arp';
export const NAT_DHCP = 'nat.dhcp';
export const NAT_DNS = 'nat.dns';
export const NAT_TCP_TX = 'nat.tcp.tx';
export const NAT_TCP_RX = 'nat.tcp.rx';
export const NAT_UDP_TX = 'nat.udp.tx';
export const NAT_UDP_RX = 'nat.udp.rx';
export const NAT_UDP_ERROR_RX = 'nat.udp.error.rx';
export const NAT_ICMP_TX = 'nat.icmp.tx';
export const NAT_ICMP_RX = 'nat.icmp.rx';
export const NAT_ICMP_RELAY_RX = 'nat.icmp.relay.rx';
export const NAT_ICMP_ERROR_RX = 'nat.icmp.error.rx';
export const NAT_OUTPUT_RX = 'nat.output.rx';
/** `nat.lookup.<table>`: one frame per flow-table lookup (hit or miss). */
export const natLookup = (table: string): string => `nat.lookup.${table}`;
/** `nat.flows.<table>`: one frame per flow created; evictions and refusals as drops. */
export const natFlows = (table: string): string => `nat.flows.${table}`;
// ---- host sockets -----------------------------------------------------------------------
export const HOST_TCP_WRITE = 'host.tcp.write';
export const HOST_TCP_READ = 'host.tcp.read';
export const HOST_UDP_WRITE = 'host.udp.write';
export const HOST_UDP_READ = 'host.udp.read';
export const HOST_ICMP_WRITE = 'host.icmp.write';
export const HOST_ICMP_READ = 'host.icmp.read';
// ---- bridged ----------------------------------------------------------------------------
export const TAP_READ = 'tap.read';
export const TAP_WRITE = 'tap.write';
// ---- capture and helpers ----------------------------------------------------------------
export const PCAP_WRITE = 'pcap.write';
export const PCAP_FLUSH = 'pcap.flush';
export const PCAP_HOST = 'pcap.host';
export const WIRE_EMIT = 'wire.emit';

export const STAGES: Readonly<Record<string, StageInfo>> = Object.freeze(
  Object.fromEntries(
    (
      [
        {
          name: NETNS_TAP_READ,
          dir: 'tx',
          layer: 'transport',
          fn: 'TapPort.onReadable (link/tap-port.ts)',
          copy: { from: "the namespace kernel's tap queue", to: "usernet's read slab (readv, batched in C)" },
          explain: "The namespace's kernel sent this frame out of its tap; usernet reads it with its virtio-net header, up to 64 frames per call into C. From here on the frame is a view of the slab: nothing copies it until it leaves.",
        },
        {
          name: NETNS_TAP_WRITE,
          dir: 'rx',
          layer: 'transport',
          fn: 'TapPort.send (link/tap-port.ts)',
          copy: { from: "usernet's frame buffer", to: "the namespace kernel (writev to the tap)" },
          explain: 'One writev of [virtio-net header, frame] per frame: the kernel copies it and delivers it to the namespace as if a NIC had received it. A TSO super-frame stays one write; the kernel segments it (or hands it whole to a local socket, GRO-style).',
        },
        {
          name: QEMU_STREAM_READ,
          dir: 'tx',
          layer: 'transport',
          fn: 'QemuStreamPort (transports/qemu-socket.ts)',
          copy: { from: "QEMU's socket", to: "usernet's receive buffer" },
          explain: "QEMU's own NIC model sent the frame over -netdev stream: a 4-byte length and the frame, read from a unix/TCP socket.",
        },
        {
          name: QEMU_STREAM_WRITE,
          dir: 'rx',
          layer: 'transport',
          fn: 'QemuStreamPort.send (transports/qemu-socket.ts)',
          copy: { from: "usernet's frame", to: "QEMU's socket" },
          explain: "Length-prefixed frames written to QEMU's -netdev stream socket; QEMU's NIC model copies them into guest RAM.",
        },
        {
          name: QEMU_DGRAM_READ,
          dir: 'tx',
          layer: 'transport',
          fn: 'QemuDgramPort (transports/qemu-socket.ts)',
          copy: { from: "QEMU's datagram socket", to: "usernet's receive buffer" },
          explain: 'One datagram per frame from -netdev dgram.',
        },
        {
          name: QEMU_DGRAM_WRITE,
          dir: 'rx',
          layer: 'transport',
          fn: 'QemuDgramPort.send (transports/qemu-socket.ts)',
          copy: { from: "usernet's frame", to: "QEMU's datagram socket" },
          explain: 'One datagram per frame to -netdev dgram.',
        },
        { name: VFIO_USER_MSG, dir: 'none', layer: 'transport', fn: 'VfioUserConnection (transports/vfio-user-connection.ts)', explain: "vfio-user protocol messages (region accesses, DMA map/unmap): the RTL8139's control plane." },
        {
          name: VFIO_USER_WAIT,
          dir: 'none',
          layer: 'transport',
          fn: 'VfioUserConnection (transports/vfio-user-connection.ts)',
          explain: 'vfio-user commands the client waits on (register reads, INTx unmasks): each stalls the guest vCPU for a socket round trip.',
        },
        { name: VFIO_USER_IRQ, dir: 'none', layer: 'transport', fn: 'VfioUserInterrupts (transports/vfio-user-irq.ts)', explain: 'Interrupts signalled to the guest through eventfds.' },
        {
          name: GUEST_TX,
          dir: 'tx',
          layer: 'guest',
          fn: 'VirtioNetDevice.takeTxChain / Rtl8139 transmit (devices/)',
          explain: "The guest's driver posted the frame (a virtio TX descriptor chain, or an RTL8139 TX descriptor); the device model turns it into a Frame — a view of guest RAM when the bytes are contiguous — with the virtio-net header's offload metadata.",
        },
        {
          name: GUEST_RX,
          dir: 'rx',
          layer: 'guest',
          fn: 'VirtioNetDevice.writeRx / Rtl8139 receive (devices/)',
          explain: "The device model puts the frame into the guest's receive buffers (virtio RX chains, or the RTL8139 ring) and raises an interrupt once per batch.",
        },
        {
          name: DEVICE_DMA,
          dir: 'rx',
          layer: 'device',
          fn: 'GuestMemory.copyIn / copyOut (devices/memory.ts; the RTL8139 model)',
          copy: { from: "the RTL8139's receive FIFO", to: "the receive ring in guest RAM" },
          explain: "DMA through the GuestMemory helpers: the RTL8139 writes each received frame into the ring the driver set up (its transmits are views of guest RAM, no copy). Counted as host → guest: that is all the model copies here.",
        },
        {
          name: DEVICE_DMA_TX,
          dir: 'tx',
          layer: 'device',
          fn: 'VirtioNetDevice.takeTxChain (devices/virtio/net-device.ts); CplusTxRing (devices/rtl8139/cplus-tx-ring.ts)',
          copy: { from: 'guest RAM (a scattered descriptor chain)', to: 'the TX staging arena' },
          explain: "A frame whose bytes are contiguous in guest RAM is not copied at all (a view is handed on); a frame scattered over several buffers is gathered here — which is most of a Linux guest's TSO frames (header and data in separate descriptors), for virtio-net and for the RTL8139C+'s descriptor ring alike.",
        },
        {
          name: DEVICE_DMA_RX,
          dir: 'rx',
          layer: 'device',
          fn: 'VirtioNetDevice.writeRx (devices/virtio/net-device.ts)',
          copy: { from: "usernet's frame", to: "the guest's RX buffers in guest RAM" },
          explain: "The one copy a virtio guest cannot avoid: the frame is written into the buffers the driver posted (mergeable buffers when it spans several).",
        },
        { name: DEVICE_FIFO, dir: 'rx', layer: 'device', fn: 'FrameQueue (link/frame-queue.ts) in the RTL8139 model', copy: { from: "usernet's frame", to: 'the RTL8139 receive FIFO' }, explain: "Frames waiting while the RTL8139's receive ring is full, as the chip's FIFO does." },
        { name: DEVICE_SEGMENT, dir: 'rx', layer: 'device', fn: 'SoftwareOffload (devices/rtl8139/software-offload.ts)', copy: { from: 'a TSO super-frame', to: 'MTU-sized frames' }, explain: 'The RTL8139 has no TSO: super-frames are cut into segments in software.' },
        {
          name: LINK_SWITCH,
          dir: 'both',
          layer: 'link',
          fn: 'Switch.receive (link/switch.ts)',
          copy: { from: 'a GSO frame', to: 'segments for a port without the offload' },
          explain: 'The learning L2 switch between guests and the uplink: MAC lookup and forwarding of views (no copy), except when a port cannot take an offload the frame uses.',
        },
        { name: LINK_LOOPBACK, dir: 'both', layer: 'link', fn: 'LoopbackPair (link/loopback-pair.ts)', explain: 'Two Ports joined back to back (tests).' },
        { name: LINK_FAULT, dir: 'both', layer: 'link', fn: 'FaultInjector (link/fault.ts)', explain: 'Drops, reorders or corrupts frames on purpose (tests).' },
        { name: LINK_RATELIMIT, dir: 'both', layer: 'link', fn: 'RateLimiter (link/rate-limit.ts)', copy: { from: 'a frame', to: 'the limiter queue' }, explain: 'Holds frames to a configured rate.' },
        {
          name: NAT_PARSE_TX,
          dir: 'tx',
          layer: 'nat',
          fn: 'NatStack.send → input (backends/nat/stack.ts)',
          explain: "Ethernet: is the frame for the gateway's MAC (or broadcast)? ARP, IPv4 and IPv6 are told apart here. Time here is the whole stack's for the batch.",
        },
        {
          name: NAT_IP_TX,
          dir: 'tx',
          layer: 'nat',
          fn: 'NatStack.inputIpv4 (backends/nat/stack.ts)',
          explain: "IPv4 header check (its checksum too, unless the frontend vouched for the frame), fragments to reassembly, the TTL checked (≤ 1 → ICMP Time Exceeded from the gateway), the guest's MAC learned; then the packet goes to its protocol module, or is answered locally.",
        },
        {
          name: NAT_IP_REASSEMBLY,
          dir: 'tx',
          layer: 'nat',
          fn: 'Ipv4Reassembly.add (backends/nat/ip-reassembly.ts)',
          copy: { from: "the guest's fragments", to: 'one datagram' },
          explain: 'Fragmented guest datagrams put back together (RFC 4787 REQ-14) before the NAT handles them; overlaps, oversize and timeouts dropped.',
        },
        { name: NAT_LOCAL, dir: 'both', layer: 'nat', fn: 'NatStack.inputLocal / echoReply (backends/nat/stack.ts)', copy: { from: "the guest's echo request", to: 'the echo reply' }, explain: 'Addressed to the gateway or the DNS address itself: answered by usernet (ping of 10.0.2.3), never reaching a host socket.' },
        { name: NAT_ARP, dir: 'both', layer: 'nat', fn: 'ArpResponder.input (backends/nat/arp.ts)', explain: 'ARP for the gateway and DNS addresses is answered with the gateway MAC.' },
        { name: NAT_DHCP, dir: 'both', layer: 'nat', fn: 'DhcpServer.input (backends/nat/dhcp.ts)', explain: 'The built-in DHCP server (10.0.2.15 first).' },
        { name: NAT_DNS, dir: 'both', layer: 'nat', fn: 'DnsServer.query (backends/nat/dns.ts)', copy: { from: "the guest's query", to: 'the upstream socket' }, explain: 'The DNS forwarder at 10.0.2.3.' },
        {
          name: 'nat.lookup',
          dir: 'both',
          layer: 'nat',
          fn: 'FlowTable.lookup (backends/nat/flows.ts)',
          explain: "The NAT lookup: the guest-side 5-tuple is hashed into the flow table (no allocation); a hit is the flow's connection or mapping, a miss may open one.",
        },
        { name: 'nat.flows', dir: 'both', layer: 'nat', fn: 'FlowTable.insert (backends/nat/flows.ts)', explain: 'A new flow: one per TCP connection, UDP guest endpoint, ICMP echo session. Evictions (LRU, idle) are counted as drops.' },
        {
          name: NAT_TCP_TX,
          dir: 'tx',
          layer: 'nat',
          fn: 'TcpModule.input → TcpConnection.segmentArrives (backends/nat/tcp.ts, tcp-connection.ts)',
          copy: { from: "the guest's segment", to: "usernet's memory (the SYN kept to quote in an ICMP error; out-of-order data held until the gap fills)" },
          explain: "TCP re-termination: the guest's segment ends here. usernet is the guest's TCP peer — sequence and window checks, ACK processing, SACK, out-of-order queue — and hands only the payload to the host socket. Its header is not forwarded: the host kernel writes a new one for its own connection.",
        },
        {
          name: NAT_TCP_RX,
          dir: 'rx',
          layer: 'nat',
          fn: 'TcpEmitter.segment / syn / bare (backends/nat/tcp-output.ts)',
          explain: "A TCP header for the guest, written straight into the frame: the ports and addresses as the guest knows the connection, usernet's own sequence and acknowledgment numbers, the window (the host socket's free space), timestamps/SACK; the checksum as the pseudo-header sum when the guest takes partial checksums, or in full. With TSO one frame carries up to 64 KiB.",
        },
        {
          name: NAT_UDP_TX,
          dir: 'tx',
          layer: 'nat',
          fn: 'UdpModule.input (backends/nat/udp.ts)',
          explain: "One host UDP socket per guest (address, port) — endpoint-independent mapping (RFC 4787) — and the destination translated (the gateway 10.0.2.2 is the host's 127.0.0.1). The guest's TTL − 1 goes on the datagram.",
        },
        {
          name: NAT_UDP_RX,
          dir: 'rx',
          layer: 'nat',
          fn: 'UdpModule.readDatagrams (backends/nat/udp.ts)',
          explain: "Filtering (only peers the guest sent to), then Ethernet/IP/UDP headers are written around the payload already received into the frame; the source becomes what the guest sent to.",
        },
        { name: NAT_UDP_ERROR_RX, dir: 'rx', layer: 'nat', fn: 'UdpModule error queue (backends/nat/udp.ts)', copy: { from: 'the ICMP error the kernel queued', to: "a rebuilt copy of the guest's datagram" }, explain: "An ICMP error about the guest's datagram (IP_RECVERR) is sent to the guest quoting its own datagram (RFC 5508)." },
        {
          name: NAT_ICMP_TX,
          dir: 'tx',
          layer: 'nat',
          fn: 'IcmpModule.input (backends/nat/icmp.ts)',
          copy: { from: "the guest's echo request", to: 'a scratch buffer (raw sockets only)' },
          explain: "Echo requests leave through a ping socket (the kernel picks the identifier) or, as root without ping sockets, a raw socket with usernet's identifier.",
        },
        {
          name: NAT_ICMP_RX,
          dir: 'rx',
          layer: 'nat',
          fn: 'IcmpModule.deliverReply (backends/nat/icmp.ts)',
          copy: { from: "the raw socket's buffer", to: 'the guest frame (raw sockets only)' },
          explain: "The reply's identifier is put back to the guest's and the checksum adjusted (RFC 1624) — two rewritten fields.",
        },
        { name: NAT_ICMP_RELAY_RX, dir: 'rx', layer: 'nat', fn: 'IcmpModule.sendError (backends/nat/icmp.ts)', copy: { from: "the router's quote", to: "a rebuilt copy of the guest's echo request" }, explain: 'An ICMP error a router sent about an echo request, rewritten to quote the guest\'s own request.' },
        { name: NAT_ICMP_ERROR_RX, dir: 'rx', layer: 'nat', fn: 'NatStack.icmpErrorQuote (backends/nat/stack.ts)', copy: { from: "the guest's packet", to: 'the ICMP error' }, explain: 'ICMP errors the gateway itself sends (TTL exceeded, unreachable), quoting the guest packet (RFC 1812 §4.3.2.3).' },
        {
          name: NAT_OUTPUT_RX,
          dir: 'rx',
          layer: 'nat',
          fn: 'GuestOutputQueue.begin / flush (backends/nat/guest-output.ts)',
          explain: "Ethernet and IPv4 headers for the guest, written into a pooled 64 KiB slot (TTL 64, a fresh IP id, the header checksum), and the batch handed to the guest's port once per input batch or event-loop turn.",
        },
        {
          name: HOST_TCP_WRITE,
          dir: 'tx',
          layer: 'host',
          fn: 'HostSocket.write (tcp-host-fd.ts: send(2) from the frame · tcp-host-node.ts: into a ring, then write(2))',
          copy: { from: "the guest's frame (a view of the read slab or guest RAM)", to: "the host socket (fd adapter: the kernel's send buffer; Node adapter: usernet's ring, then the kernel)" },
          explain: "Only the payload goes on — to the host socket, straight from the guest's frame with the fd adapter (one copy, the kernel's), or through a bounded ring with Node's sockets (two copies). Only what the host side took is acknowledged to the guest, and the window advertised to the guest is the room left there.",
        },
        {
          name: HOST_TCP_READ,
          dir: 'rx',
          layer: 'host',
          fn: 'HostSocket.peek (tcp-host-fd.ts: recv(2) MSG_PEEK at SO_PEEK_OFF · tcp-host-node.ts: read(2) into a ring, copied out per segment)',
          copy: { from: "the host socket (fd adapter: the kernel's receive queue; Node adapter: the kernel, then usernet's ring)", to: "the guest frame's payload area" },
          explain: "Host bytes are kept until the guest acknowledges them — in the kernel's receive queue (fd adapter: each segment peeks at its offset straight into the frame, an ACK drops bytes without copying) or in a bounded ring (Node adapter: one copy in, one per segment out). A retransmission copies again.",
        },
        { name: HOST_UDP_WRITE, dir: 'tx', layer: 'host', fn: 'UdpModule.transmit → sendto(2) (backends/nat/udp.ts)', copy: { from: "the guest's frame", to: 'the host UDP socket (kernel)' }, explain: 'sendto straight from the guest frame: the kernel builds the host-side headers.' },
        { name: HOST_UDP_READ, dir: 'rx', layer: 'host', fn: 'UdpModule.readDatagrams → recvfrom(2) (backends/nat/udp.ts)', copy: { from: 'the host UDP socket (kernel)', to: "the guest frame's payload area" }, explain: 'recvfrom straight into a pooled guest frame, past the room left for the headers.' },
        { name: HOST_ICMP_WRITE, dir: 'tx', layer: 'host', fn: 'IcmpModule.input → sendto(2) (backends/nat/icmp.ts)', copy: { from: "the guest's echo request", to: 'the ping/raw socket (kernel)' }, explain: 'The echo request leaves through a host socket.' },
        { name: HOST_ICMP_READ, dir: 'rx', layer: 'host', fn: 'IcmpModule.readPing / readRaw → recvfrom(2) (backends/nat/icmp.ts)', copy: { from: 'the ping/raw socket (kernel)', to: 'the guest frame / a read buffer' }, explain: 'The echo reply is read from the host socket.' },
        {
          name: TAP_WRITE,
          dir: 'tx',
          layer: 'tap',
          fn: 'TapBackend → TapPort.send (backends/tap.ts, link/tap-port.ts)',
          copy: { from: "the guest's frame (a view)", to: 'the bridged tap (kernel)' },
          explain: 'Bridged: the frame is written to the tap as it is — same MACs, same addresses, same ports, same checksums. The kernel copies it once and switches it onto the bridge.',
        },
        {
          name: TAP_READ,
          dir: 'rx',
          layer: 'tap',
          fn: 'TapBackend → TapPort.onReadable (backends/tap.ts, link/tap-port.ts)',
          copy: { from: "the bridged tap's queue (kernel)", to: "usernet's read slab" },
          explain: 'Bridged: a frame the bridge sent to the tap, read as it is, and handed to the guest side unchanged.',
        },
        { name: PCAP_WRITE, dir: 'none', layer: 'capture', fn: 'CaptureWriter.write (meter/pcap.ts)', copy: { from: 'a frame', to: 'the capture buffer' }, explain: 'A capture record (--pcap): one copy per frame into the writer buffer.' },
        { name: PCAP_FLUSH, dir: 'none', layer: 'capture', fn: 'CaptureSink (meter/pcap.ts)', copy: { from: 'the capture buffer', to: 'the file (kernel page cache)' }, explain: 'Capture chunks written to the file.' },
        { name: PCAP_HOST, dir: 'none', layer: 'capture', fn: 'HostCapture (meter/pcap-host.ts)', copy: { from: 'bytes written to / read from a host socket', to: 'a synthesized host-side frame' }, explain: 'The host side of the NAT as Wireshark would see it on lo (--pcap-host).' },
        { name: WIRE_EMIT, dir: 'none', layer: 'wire', fn: 'Repr.emit (wire/view.ts)', copy: { from: 'a payload', to: 'a packet being built' }, explain: 'Packets built with the wire Reprs (tests, local answers).' },
      ] as StageInfo[]
    ).map((s) => [s.name, Object.freeze(s)]),
  ),
);

/** What a stage is, by exact name or by prefix (`nat.lookup.tcp` → `nat.lookup`); null if unknown. */
export function stageInfo(name: string): StageInfo | null {
  const exact = STAGES[name];
  if (exact) return exact;
  for (let cut = name.lastIndexOf('.'); cut > 0; cut = name.lastIndexOf('.', cut - 1)) {
    const s = STAGES[name.slice(0, cut)];
    if (s) return s;
  }
  return null;
}

const POSITION = new Map(Object.keys(STAGES).map((name, i) => [name, i]));

/**
 * The order stages are listed in: guest → host stages in the order a frame meets them, then the
 * stages of both ways, then host → guest in the order a frame meets them, then the rest.
 */
export function stageOrder(name: string): number {
  const info = stageInfo(name);
  if (!info) return 10_000;
  const way = info.dir === 'tx' ? 0 : info.dir === 'both' ? 1 : info.dir === 'rx' ? 2 : 3;
  let at = POSITION.get(info.name) ?? 999;
  // host → guest runs the other way: host socket, NAT, device, transport
  if (info.dir === 'rx') at = RX_ORDER.indexOf(info.layer) * 100 + at;
  return way * 100_000 + at;
}

const RX_ORDER: StageInfo['layer'][] = ['host', 'tap', 'nat', 'link', 'device', 'guest', 'transport', 'capture', 'wire'];

/** Stages whose copy is done by the kernel in a syscall (not by usernet's code). */
export const COPIED_BY_KERNEL: ReadonlySet<string> = new Set<string>([
  NETNS_TAP_READ,
  NETNS_TAP_WRITE,
  TAP_READ,
  TAP_WRITE,
  HOST_TCP_WRITE,
  HOST_TCP_READ,
  HOST_UDP_WRITE,
  HOST_UDP_READ,
  HOST_ICMP_WRITE,
  HOST_ICMP_READ,
  QEMU_STREAM_READ,
  QEMU_STREAM_WRITE,
  QEMU_DGRAM_READ,
  QEMU_DGRAM_WRITE,
  PCAP_FLUSH,
]);
