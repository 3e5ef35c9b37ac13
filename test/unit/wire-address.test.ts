/**
 * Address helpers (src/wire/address.ts): IPv4 numbers, RFC 5952 IPv6 text, MACs, and the
 * derived addresses NDP needs (RFC 4291 EUI-64 link-local, solicited-node; RFC 2464 multicast MAC).
 */
import test from 'ava';
import * as fc from 'fast-check';
import {
  BROADCAST_MAC,
  ipv4Mask,
  ipv4MulticastMac,
  ipv4ToString,
  ipv6LinkLocalFromMac,
  ipv6MulticastMac,
  ipv6ToString,
  isBroadcastMac,
  isIpv6LinkLocal,
  isMulticastMac,
  macEquals,
  macToString,
  parseIpv4,
  parseIpv6,
  parseMac,
  readIpv4,
  solicitedNodeMulticast,
  tryParseIpv4,
  tryParseIpv6,
  tryParseMac,
  WireError,
  writeIpv4,
} from '../../src/wire';

test('IPv4 numbers are unsigned big-endian values', (t) => {
  t.is(parseIpv4('10.0.2.15'), 0x0a00020f);
  t.is(parseIpv4('255.255.255.255'), 0xffffffff);
  t.true(parseIpv4('200.1.1.1') > 0);
  t.is(ipv4ToString(0xc0a80001), '192.168.0.1');
  t.is(ipv4ToString(-1), '255.255.255.255');
  const b = new Uint8Array(6);
  writeIpv4(b, 2, 0xdeadbeef);
  t.is(readIpv4(b, 2), 0xdeadbeef);
  t.is(ipv4Mask(24), 0xffffff00);
  t.is(ipv4Mask(0), 0);
  t.is(ipv4Mask(32), 0xffffffff);
  for (const bad of ['', '1.2.3', '1.2.3.4.5', '256.1.1.1', '01.2.3.4', '1.2.3.x', ' 1.2.3.4']) t.is(tryParseIpv4(bad), null, bad);
  const err = t.throws(() => parseIpv4('nope'), { instanceOf: WireError });
  t.is(err?.code, 'bad-address');
});

test('IPv6 text follows RFC 5952', (t) => {
  const cases: [string, string][] = [
    ['::', '::'],
    ['::1', '::1'],
    ['fd00:0:0:0:0:0:0:1', 'fd00::1'],
    ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'], // first of two equal runs
    ['2001:db8:0:1:1:1:1:1', '2001:db8:0:1:1:1:1:1'], // a single zero group stays
    ['2001:DB8::AbCd', '2001:db8::abcd'],
    ['fe80::ff:fe00:301', 'fe80::ff:fe00:301'],
    ['::ffff:10.0.2.15', '::ffff:10.0.2.15'],
    ['1:2:3:4:5:6:7::', '1:2:3:4:5:6:7:0'],
  ];
  for (const [input, text] of cases) t.is(ipv6ToString(parseIpv6(input)), text, input);
  for (const bad of ['', ':', '1:2:3:4:5:6:7:8:9', '1::2::3', 'g::1', '12345::', 'fe80::1%eth0', '::1.2.3']) t.is(tryParseIpv6(bad), null, bad);
  t.throws(() => parseIpv6('x'), { instanceOf: WireError });
});

test('IPv6 text round-trips (property)', (t) => {
  fc.assert(
    fc.property(fc.uint8Array({ minLength: 16, maxLength: 16 }), (a) => {
      const back = parseIpv6(ipv6ToString(a));
      return Buffer.compare(back, a) === 0;
    }),
    { numRuns: 2000 },
  );
  t.pass();
});

test('MAC text and predicates', (t) => {
  const m = parseMac('52:54:00:12:34:56');
  t.is(macToString(m), '52:54:00:12:34:56');
  t.true(macEquals(parseMac('52-54-00-12-34-56'), m));
  t.is(tryParseMac('52:54:00:12:34'), null);
  t.is(tryParseMac('52:54:00:12:34:5g'), null);
  t.true(isBroadcastMac(BROADCAST_MAC));
  t.true(isMulticastMac(BROADCAST_MAC));
  t.false(isMulticastMac(m));
});

test('derived addresses: EUI-64 link-local, solicited-node, multicast MACs', (t) => {
  const mac = parseMac('02:00:00:00:03:02');
  const ll = ipv6LinkLocalFromMac(mac);
  t.is(ipv6ToString(ll), 'fe80::ff:fe00:302'); // matches what the kernel used in ndp.pcap
  t.true(isIpv6LinkLocal(ll));
  t.is(ipv6ToString(solicitedNodeMulticast(parseIpv6('fd00:3::ff:fe00:302'))), 'ff02::1:ff00:302');
  t.is(macToString(ipv6MulticastMac(parseIpv6('ff02::1:ff00:302'))), '33:33:ff:00:03:02');
  t.is(macToString(ipv4MulticastMac(parseIpv4('224.128.1.2'))), '01:00:5e:00:01:02');
});
