import test from 'ava';
import { ipv4ToString, parseIpv4 } from '../../src/wire/address';
import {
  DhcpMessage,
  DhcpRepr,
  DHCP_ACK,
  DHCP_BROADCAST_FLAG,
  DHCP_DISCOVER,
  DHCP_INFORM,
  DHCP_NAK,
  DHCP_OFFER,
  DHCP_RELEASE,
  DHCP_REQUEST,
} from '../../src/wire/dhcp';
import { Guest, GUEST_MAC, udpFrame, BCAST_MAC, type Received } from './nat-guest';

let xid = 0x1000;

function dhcpFrame(fields: Partial<DhcpRepr>, ip: { src?: string; dst?: string; dstMac?: Uint8Array; mac?: Uint8Array } = {}): Uint8Array {
  const mac = ip.mac ?? GUEST_MAC;
  const chaddr = new Uint8Array(16);
  chaddr.set(mac);
  const repr = new DhcpRepr({ xid: fields.xid ?? ++xid, chaddr, ...fields });
  const buf = new Uint8Array(600);
  const len = repr.emit(new DhcpMessage().wrap(buf));
  return udpFrame({
    src: ip.src ?? '0.0.0.0',
    dst: ip.dst ?? '255.255.255.255',
    dstMac: ip.dstMac ?? BCAST_MAC,
    srcMac: mac,
    srcPort: 68,
    dstPort: 67,
    payload: buf.subarray(0, len),
  });
}

function parseReply(r: Received): DhcpRepr {
  const m = DhcpRepr.parse(new DhcpMessage().wrap(r.udp!.payload));
  if (m instanceof Error) throw m;
  return m;
}

const isDhcp = (r: Received) => r.udp?.srcPort === 67 && r.udp.dstPort === 68;

test('DISCOVER → OFFER, REQUEST → ACK with the options a client needs; renewal; release', async (t) => {
  const g = new Guest({ config: { mtu: 1500, leaseTime: 3600 }, domainName: 'usernet.test' });
  try {
    g.send(dhcpFrame({ messageType: DHCP_DISCOVER, xid: 42, flags: DHCP_BROADCAST_FLAG, parameterRequestList: [1, 3, 6, 26] }));
    const offerFrame = await g.waitFor(isDhcp);
    t.true(offerFrame.ip!.headerChecksumOk);
    t.true(offerFrame.udp!.checksumOk);
    t.is(offerFrame.ip!.src, '10.0.2.2');
    t.is(offerFrame.ip!.dst, '255.255.255.255'); // broadcast flag
    t.is(offerFrame.ethDst, 'ff:ff:ff:ff:ff:ff');
    t.true(offerFrame.udp!.payload.length >= 300);
    const offer = parseReply(offerFrame);
    t.is(offer.messageType, DHCP_OFFER);
    t.is(offer.xid, 42);
    t.is(ipv4ToString(offer.yiaddr), '10.0.2.15');
    t.is(ipv4ToString(offer.serverId!), '10.0.2.2');
    t.is(ipv4ToString(offer.subnetMask!), '255.255.255.0');
    t.is(ipv4ToString(offer.router!), '10.0.2.2');
    t.deepEqual(offer.dnsServers.map(ipv4ToString), ['10.0.2.3']);
    t.is(offer.mtu, 1500);
    t.is(offer.leaseTime, 3600);
    t.is(offer.renewalTime, 1800);
    t.is(offer.rebindingTime, 3150);
    t.is(offer.domainName, 'usernet.test');

    // SELECTING: REQUEST with the server id and the offered address; no broadcast flag → unicast.
    g.send(dhcpFrame({ messageType: DHCP_REQUEST, xid: 43, serverId: offer.serverId, requestedIp: offer.yiaddr }));
    const ackFrame = await g.waitFor(isDhcp);
    const ack = parseReply(ackFrame);
    t.is(ack.messageType, DHCP_ACK);
    t.is(ack.xid, 43);
    t.is(ipv4ToString(ack.yiaddr), '10.0.2.15');
    t.is(ackFrame.ip!.dst, '10.0.2.15');
    t.is(ackFrame.ethDst, '52:54:00:12:34:56');
    t.is(ack.leaseTime, 3600);
    t.is(g.stack.guestAddress(), '10.0.2.15');

    // RENEWING: unicast from ciaddr to the server, no server id, no requested ip.
    g.send(
      dhcpFrame(
        { messageType: DHCP_REQUEST, xid: 44, ciaddr: parseIpv4('10.0.2.15') },
        { src: '10.0.2.15', dst: '10.0.2.2', dstMac: new Uint8Array([0x52, 0x55, 10, 0, 2, 2]) },
      ),
    );
    const renew = await g.waitFor(isDhcp);
    t.is(parseReply(renew).messageType, DHCP_ACK);
    t.is(renew.ip!.dst, '10.0.2.15');

    // INFORM: configuration, no lease.
    g.send(dhcpFrame({ messageType: DHCP_INFORM, xid: 45, ciaddr: parseIpv4('10.0.2.15') }, { src: '10.0.2.15', dst: '10.0.2.2', dstMac: new Uint8Array([0x52, 0x55, 10, 0, 2, 2]) }));
    const inform = parseReply(await g.waitFor(isDhcp));
    t.is(inform.messageType, DHCP_ACK);
    t.is(inform.yiaddr, 0);
    t.is(inform.leaseTime, null);
    t.is(ipv4ToString(inform.router!), '10.0.2.2');

    // RELEASE, then another client gets the freed address first.
    g.send(dhcpFrame({ messageType: DHCP_RELEASE, ciaddr: parseIpv4('10.0.2.15'), serverId: parseIpv4('10.0.2.2') }, { src: '10.0.2.15', dst: '10.0.2.2' }));
    t.is(g.stack.guestAddress(), null);
  } finally {
    await g.close();
  }
});

test('two clients get two addresses; a client comes back to its own; a foreign INIT-REBOOT is NAKed', async (t) => {
  const g = new Guest();
  const macB = new Uint8Array([0x52, 0x54, 0, 0, 0, 0xbb]);
  try {
    g.send(dhcpFrame({ messageType: DHCP_DISCOVER, xid: 1 }));
    const a = parseReply(await g.waitFor(isDhcp));
    g.send(dhcpFrame({ messageType: DHCP_REQUEST, xid: 2, serverId: a.serverId, requestedIp: a.yiaddr }));
    t.is(parseReply(await g.waitFor(isDhcp)).messageType, DHCP_ACK);

    g.send(dhcpFrame({ messageType: DHCP_DISCOVER, xid: 3 }, { mac: macB }));
    const b = parseReply(await g.waitFor(isDhcp));
    t.is(ipv4ToString(b.yiaddr), '10.0.2.16');

    // B asks (INIT-REBOOT) for A's address: NAK, broadcast.
    g.send(dhcpFrame({ messageType: DHCP_REQUEST, xid: 4, requestedIp: a.yiaddr }, { mac: macB }));
    const nakFrame = await g.waitFor(isDhcp);
    t.is(parseReply(nakFrame).messageType, DHCP_NAK);
    t.is(nakFrame.ip!.dst, '255.255.255.255');

    // A rediscovers: same address.
    g.send(dhcpFrame({ messageType: DHCP_DISCOVER, xid: 5 }));
    t.is(ipv4ToString(parseReply(await g.waitFor(isDhcp)).yiaddr), '10.0.2.15');

    // A client that chose another server gives its offer back.
    g.send(dhcpFrame({ messageType: DHCP_REQUEST, xid: 6, serverId: parseIpv4('10.0.2.99'), requestedIp: b.yiaddr }, { mac: macB }));
    t.deepEqual(await g.collect(isDhcp, 50), []);
  } finally {
    await g.close();
  }
});

test('INIT-REBOOT after a restart keeps the address when it is free', async (t) => {
  const g = new Guest();
  try {
    g.send(dhcpFrame({ messageType: DHCP_REQUEST, xid: 7, requestedIp: parseIpv4('10.0.2.20') }));
    const ack = parseReply(await g.waitFor(isDhcp));
    t.is(ack.messageType, DHCP_ACK);
    t.is(ipv4ToString(ack.yiaddr), '10.0.2.20');
    g.send(dhcpFrame({ messageType: DHCP_REQUEST, xid: 8, requestedIp: parseIpv4('192.168.0.5') }));
    t.is(parseReply(await g.waitFor(isDhcp)).messageType, DHCP_NAK);
  } finally {
    await g.close();
  }
});

test('garbage on port 67 is dropped and counted', async (t) => {
  const g = new Guest();
  try {
    g.send(udpFrame({ src: '0.0.0.0', dst: '255.255.255.255', dstMac: BCAST_MAC, srcPort: 68, dstPort: 67, payload: new Uint8Array(100) }));
    g.send(udpFrame({ src: '0.0.0.0', dst: '255.255.255.255', dstMac: BCAST_MAC, srcPort: 68, dstPort: 67, payload: new Uint8Array(300) }));
    t.deepEqual(await g.collect(isDhcp, 30), []);
    t.is(g.meter.stage('nat.dhcp').drops, 2);
  } finally {
    await g.close();
  }
});
