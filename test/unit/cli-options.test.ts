import test from 'ava';
import { buildNatConfig, checkDnsUpstream, parseDnsHost, parseNetwork, netmaskOf } from '../../src/cli/nat-options';

test('defaults are QEMU -netdev user defaults', (t) => {
  const c = buildNatConfig({});
  t.is(c.network, '10.0.2.0');
  t.is(c.prefixLength, 24);
  t.is(c.gateway, '10.0.2.2');
  t.is(c.dns, '10.0.2.3');
  t.is(c.dhcpStart, '10.0.2.15');
  t.true(c.hostLoopback);
  t.deepEqual(c.hostForwards, []);
});

test('-o in QEMU syntax and flags merge; flags win; lists concatenate', (t) => {
  const c = buildNatConfig({
    o: ['net=192.168.76.0/255.255.255.0,host=192.168.76.2,dns=192.168.76.3,dhcpstart=192.168.76.9,hostfwd=tcp:127.0.0.1:2222-:22'],
    dns: '192.168.76.4',
    mtu: 9000,
    hostfwd: ['udp::5353-192.168.76.9:53'],
    dnsUpstream: ['127.0.0.77:5300', '[::1]:53'],
    dnsHost: ['Foo.Example.=192.0.2.9'],
    hostLoopback: false,
  });
  t.is(c.network, '192.168.76.0');
  t.is(c.prefixLength, 24);
  t.is(c.gateway, '192.168.76.2');
  t.is(c.dns, '192.168.76.4');
  t.is(c.dhcpStart, '192.168.76.9');
  t.is(c.mtu, 9000);
  t.false(c.hostLoopback);
  t.deepEqual(
    c.hostForwards.map((f) => `${f.protocol}:${f.hostAddress}:${f.hostPort}-${f.guestAddress}:${f.guestPort}`),
    ['tcp:127.0.0.1:2222-:22', 'udp:127.0.0.1:5353-192.168.76.9:53'],
  );
  t.deepEqual(c.dnsUpstream, ['127.0.0.77:5300', '[::1]:53']);
  t.deepEqual(c.dnsHosts, { 'foo.example': '192.0.2.9' });
});

test('bad values are EINVAL with the option named', (t) => {
  const bad: [Parameters<typeof buildNatConfig>[0], RegExp][] = [
    [{ o: ['bogus=1'] }, /unknown -netdev user option/],
    [{ net: '10.0.2.0/33' }, /prefixLength|prefix/],
    [{ net: 'nonsense' }, /--net/],
    [{ net: '10.0.0.0/255.0.255.0' }, /contiguous/],
    [{ dhcpStart: '192.168.1.5' }, /outside/],
    [{ host: '10.0.3.2' }, /--host .* outside/],
    [{ dhcpStart: '10.0.2.2' }, /collides/],
    [{ hostfwd: ['tcp:127.0.0.1:99999-:22'] }, /port/],
    [{ hostfwd: ['garbage'] }, /hostfwd/],
    [{ dnsUpstream: ['not-an-address'] }, /--dns-upstream/],
    [{ dnsUpstream: ['127.0.0.1:0'] }, /--dns-upstream/],
    [{ dnsHost: ['noequals'] }, /--dns-host/],
    [{ dnsHost: ['a=b'] }, /--dns-host/],
    [{ mtu: 100 }, /mtu/],
  ];
  for (const [opts, re] of bad) {
    const e = t.throws(() => buildNatConfig(opts), undefined, JSON.stringify(opts));
    t.is((e as { code?: string }).code, 'EINVAL', JSON.stringify(opts));
    t.regex(e?.message ?? '', re, JSON.stringify(opts));
  }
});

test('small parsers', (t) => {
  t.deepEqual(parseNetwork('10.1.0.0/16'), { network: '10.1.0.0', prefixLength: 16 });
  t.deepEqual(parseNetwork('10.1.0.0'), { network: '10.1.0.0', prefixLength: 24 });
  t.deepEqual(parseDnsHost('a.b=::1'), ['a.b', '::1']);
  t.is(checkDnsUpstream('1.2.3.4'), '1.2.3.4');
  t.is(checkDnsUpstream('::1'), '::1');
  t.is(netmaskOf(24), '255.255.255.0');
});
