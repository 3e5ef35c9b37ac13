/**
 * Fragments through usernet (RFC 4787 REQ-14): with an MTU of 1500 in the guest namespace, the
 * guest's kernel fragments a 4000-byte UDP datagram and a 3000-byte ping; usernet reassembles
 * them, the host sockets send them whole, and the answers come back (fragmented towards the guest
 * by usernet, reassembled by the guest's kernel). The meter shows the reassembly.
 */
import dgram from 'node:dgram';
import { createHash } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { testIf } from '../helpers/env';
import { withSandbox } from '../helpers/netns';
import { startNatGuest } from '../helpers/nat-guest';

const test = testIf('root', 'netns', 'tun', 'cmd:python3', 'cmd:ping');

interface Stage {
  name: string;
  frames: number;
  drops: number;
}

const GUEST_UDP = `
import socket, sys, hashlib
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, 10, 0)  # IP_MTU_DISCOVER = IP_PMTUDISC_DONT: fragment, no DF
s.settimeout(5)
data = bytes((i * 7) & 0xff for i in range(4000))
for attempt in range(3):
    s.sendto(data, ('10.0.2.2', int(sys.argv[1])))
    try:
        reply, _ = s.recvfrom(65535)
        print('len=%d sha=%s' % (len(reply), hashlib.sha256(reply).hexdigest()))
        break
    except socket.timeout:
        print('timeout')
`;

test('a 4000-byte UDP datagram and a 3000-byte ping leave the guest fragmented and come back whole', async (t) => {
  const echo = dgram.createSocket('udp4');
  echo.on('message', (msg, rinfo) => echo.send(msg, rinfo.port, rinfo.address));
  await new Promise<void>((r) => echo.bind(0, '127.0.0.1', r));
  t.teardown(() => echo.close());
  const port = (echo.address() as AddressInfo).port;
  const expected = createHash('sha256')
    .update(Buffer.from(Array.from({ length: 4000 }, (_, i) => (i * 7) & 0xff)))
    .digest('hex');
  await withSandbox(async (sb) => {
    const g = await startNatGuest(sb, { args: ['--mtu', '1500'] });
    const u = await g.exec(['python3', '-c', GUEST_UDP, String(port)], 60_000);
    t.is(u.code, 0, u.stderr);
    t.regex(u.stdout, new RegExp(`len=4000 sha=${expected}`), u.stdout);
    const p = await g.exec(['ping', '-c', '2', '-W', '5', '-s', '3000', '10.0.2.2'], 60_000);
    t.is(p.code, 0, p.stdout + p.stderr);
    t.regex(p.stdout, /2 packets transmitted, 2 received/);
    const stats = (await g.ctl({ cmd: 'stats' })) as { stages: Stage[] };
    const r = stats.stages.find((s) => s.name === 'nat.ip.reassembly');
    t.truthy(r, 'the reassembly stage is in the ledger');
    t.true((r?.frames ?? 0) >= 3, `datagrams reassembled: ${r?.frames}`);
    t.is(r?.drops ?? -1, 0);
  });
});
