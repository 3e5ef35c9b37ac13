import test from 'ava';
import { ARP_REPLY, ARP_REQUEST } from '../../src/wire/arp';
import { ipv4ToString, macToString } from '../../src/wire/address';
import { arpFrame, Guest, GUEST_MAC, GW_MAC } from './nat-guest';

const isArpReply = (r: { arp?: { operation: number } }) => r.arp?.operation === ARP_REPLY;

test('ARP requests for the gateway, the DNS address and an unused address are answered with the gateway MAC', async (t) => {
  const g = new Guest();
  try {
    for (const target of ['10.0.2.2', '10.0.2.3', '10.0.2.99']) {
      g.send(arpFrame({ senderIp: '10.0.2.15', targetIp: target }));
      const r = await g.waitFor(isArpReply);
      t.is(r.ethDst, macToString(GUEST_MAC));
      t.is(r.ethSrc, macToString(GW_MAC));
      t.is(r.arp!.operation, ARP_REPLY);
      t.is(macToString(r.arp!.senderMac), macToString(GW_MAC));
      t.is(ipv4ToString(r.arp!.senderIp), target);
      t.is(ipv4ToString(r.arp!.targetIp), '10.0.2.15');
      t.is(macToString(r.arp!.targetMac), macToString(GUEST_MAC));
    }
  } finally {
    await g.close();
  }
});

test('no answer for probes of the guest address, gratuitous ARP, other guests, or outside the network', async (t) => {
  const g = new Guest();
  try {
    const other = new Uint8Array([0x52, 0x54, 0, 0, 0, 0x77]);
    g.send(
      arpFrame({ senderIp: '0.0.0.0', targetIp: '10.0.2.15' }), // RFC 5227 probe
      arpFrame({ senderIp: '10.0.2.15', targetIp: '10.0.2.15' }), // announcement
      arpFrame({ senderIp: '10.0.2.16', targetIp: '10.0.2.16', senderMac: other }), // another guest announces
      arpFrame({ senderIp: '10.0.2.15', targetIp: '10.0.2.16' }), // asks for that guest
      arpFrame({ senderIp: '10.0.2.15', targetIp: '192.168.1.1' }),
      arpFrame({ senderIp: '10.0.2.15', targetIp: '10.0.2.255' }),
      arpFrame({ senderIp: '10.0.2.15', targetIp: '10.0.2.2', op: ARP_REPLY }),
    );
    t.deepEqual(await g.collect(isArpReply, 100), []);
    // The probe of our own address is answered: it is in use.
    g.send(arpFrame({ senderIp: '0.0.0.0', targetIp: '10.0.2.2' }));
    const r = await g.waitFor(isArpReply);
    t.is(ipv4ToString(r.arp!.senderIp), '10.0.2.2');
    t.is(r.arp!.operation, ARP_REPLY);
    t.not(ARP_REQUEST, ARP_REPLY);
  } finally {
    await g.close();
  }
});

test('malformed ARP is counted, not answered', async (t) => {
  const g = new Guest();
  try {
    const f = arpFrame({ senderIp: '10.0.2.15', targetIp: '10.0.2.2' });
    g.send(f.subarray(0, 30));
    const bad = Uint8Array.from(f);
    bad[14 + 5] = 16; // protocol address length
    g.send(bad);
    t.deepEqual(await g.collect(isArpReply, 50), []);
    t.true(g.meter.stage('nat.arp').drops >= 2);
  } finally {
    await g.close();
  }
});
