/**
 * Hairpinning (RFC 4787 REQ-9, RFC 5382 REQ-8): a guest reaches a service behind the same NAT
 * through the NAT's outside address — here its own forwarded port, at the gateway address that
 * stands for the host. TCP and UDP go out through usernet's host sockets, come back in through
 * the forwards, and the answers travel the same way back; the service sees the connection
 * coming from the outside (the gateway), the client sees its answers from the address and port
 * it sent to.
 */
import { testIf } from '../helpers/env';
import { withNatGuest, type NatGuest } from '../helpers/nat-guest';
import { freePort } from '../helpers/host-servers';

const test = testIf('root', 'netns', 'tun');

/** In the guest: a TCP and a UDP echo server on `port`, then clients to the forwards. */
const GUEST = `
const net = require('net'), dgram = require('dgram');
const [port, tcpFwd, udpFwd] = process.argv.slice(1).map(Number);
const out = {};
net.createServer((s) => {
  s.on('error', () => {});
  s.once('data', (d) => s.end('tcp from ' + s.remoteAddress + ': ' + d));
}).listen(port, '0.0.0.0', () => {
  const u = dgram.createSocket('udp4');
  u.on('message', (m, r) => u.send('udp from ' + r.address + ': ' + m, r.port, r.address));
  u.bind(port, '0.0.0.0', () => {
    const c = net.connect(tcpFwd, '10.0.2.2', () => c.write('hello'));
    let text = '';
    c.on('data', (d) => (text += d));
    c.on('end', () => {
      out.tcp = text;
      const k = dgram.createSocket('udp4');
      k.on('message', (m, r) => {
        out.udp = String(m);
        out.udpFrom = r.address + ':' + r.port;
        console.log(JSON.stringify(out));
        process.exit(0);
      });
      k.send('hi', udpFwd, '10.0.2.2');
    });
  });
});
setTimeout(() => { console.log(JSON.stringify({ ...out, timeout: true })); process.exit(1); }, 20000);
`;

test('the guest reaches its own forwarded ports through the gateway address (TCP and UDP)', async (t) => {
  const tcpFwd = await freePort();
  const udpFwd = await freePort();
  await withNatGuest({ args: ['--hostfwd', `tcp:127.0.0.1:${tcpFwd}-:8080`, '--hostfwd', `udp:127.0.0.1:${udpFwd}-:8080`] }, async (g: NatGuest) => {
    const r = await g.exec([process.execPath, '-e', GUEST, '8080', String(tcpFwd), String(udpFwd)], 60_000);
    t.is(r.code, 0, r.stdout + r.stderr);
    const got = JSON.parse(r.stdout.trim().split('\n').pop()!) as { tcp: string; udp: string; udpFrom: string };
    t.is(got.tcp, 'tcp from 10.0.2.2: hello', 'the service sees the hairpinned connection from the outside');
    t.is(got.udp, 'udp from 10.0.2.2: hi');
    t.is(got.udpFrom, `10.0.2.2:${udpFwd}`, 'the answer comes from the address and port the client sent to');
  });
});
