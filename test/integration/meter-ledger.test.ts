/**
 * The ledger against a known transfer: 8 MiB each way through usernet, with the Linux kernel in
 * a network namespace as the guest — through the NAT (`usernet run --netns`, both host-socket
 * adapters), and bridged (the same netns tap joined to a TapBackend on a test bridge). The
 * counters must match the transfer: the payload exactly where only payload passes (the host
 * sockets), payload plus headers where frames pass, one copy per frame on every tap, the
 * copies per payload byte the design gives (meter/stages.ts), translations counted as
 * rewrites in NAT and none bridged. Counters are read as differences around each transfer.
 */
import net from 'node:net';
import { testIf } from '../helpers/env';
import { withNatGuest, type NatGuest } from '../helpers/nat-guest';
import { withSandbox } from '../helpers/netns';
import { withBridgedNet } from '../helpers/bridged-net';
import type { StageSnapshot } from '../../src/meter/meter';
import { Meter } from '../../src/meter/meter';
import { delta, ledger } from '../../src/meter/ledger';
import { NetnsTapPort } from '../../src/transports/netns-tap';
import { bridgeToTap } from '../../src/backends/tap';
import { sendFiller } from '../helpers/host-servers';

const test = testIf('root', 'netns', 'tun');
const SIZE = 8 * 1024 * 1024;

/** A TCP server on 127.0.0.1 that counts what it receives (sink) or sends SIZE bytes and closes (source). */
async function hostServer(kind: 'sink' | 'source'): Promise<{ port: number; received: Promise<number>; close(): Promise<void> }> {
  let resolveReceived: (n: number) => void = () => {};
  const received = new Promise<number>((r) => (resolveReceived = r));
  const server = net.createServer((sock) => {
    if (kind === 'sink') {
      let n = 0;
      sock.on('data', (d) => (n += d.length));
      sock.on('end', () => {
        resolveReceived(n);
        sock.end();
      });
    } else {
      sendFiller(sock, SIZE);
    }
    sock.on('error', () => {});
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as net.AddressInfo).port,
    received,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

const stage = (s: readonly StageSnapshot[], name: string): StageSnapshot =>
  s.find((x) => x.name === name) ?? { name, frames: 0, bytes: 0, copies: 0, bytesCopied: 0, rewrites: 0, drops: 0, dropReasons: {}, ns: 0 };

interface Stats {
  stages: StageSnapshot[];
  tcp: Record<string, number> | null;
}

async function around(g: NatGuest, fn: () => Promise<void>): Promise<{ d: StageSnapshot[]; tcp: Record<string, number> }> {
  const before = (await g.ctl({ cmd: 'stats' })) as Stats;
  await fn();
  // the last ACKs and window updates settle
  await new Promise((r) => setTimeout(r, 300));
  const after = (await g.ctl({ cmd: 'stats' })) as Stats;
  const tcp: Record<string, number> = {};
  for (const k of Object.keys(after.tcp ?? {})) tcp[k] = (after.tcp?.[k] ?? 0) - (before.tcp?.[k] ?? 0);
  return { d: delta(after.stages, before.stages), tcp };
}

for (const adapter of ['node', 'fd'] as const) {
  test(`NAT (${adapter} host sockets): 8 MiB guest→host and host→guest give the ledger the transfer`, async (t) => {
    const sink = await hostServer('sink');
    const source = await hostServer('source');
    t.teardown(() => Promise.all([sink.close(), source.close()]).then(() => undefined));
    await withNatGuest({ env: { USERNET_TCP_HOST: adapter } }, async (g) => {
      // ---- guest → host
      const up = await around(g, async () => {
        const r = await g.sh(`head -c ${SIZE} /dev/zero > /dev/tcp/10.0.2.2/${sink.port}`, 120_000);
        if (r.code !== 0) t.log(`guest→host did not finish (a 120 s timeout shows as code 1, no stderr); flows: ${JSON.stringify(await g.ctl({ cmd: 'flows' }))}`);
        t.is(r.code, 0, `guest→host: ${r.stderr}`);
        t.is(await sink.received, SIZE);
      });
      const d = up.d;
      const write = stage(d, 'host.tcp.write');
      t.is(write.bytes, SIZE, 'host.tcp.write: exactly the payload');
      t.is(up.tcp.bytesFromGuest, SIZE, 'per-flow bytes guest→host');
      const tcpTx = stage(d, 'nat.tcp.tx');
      // every segment the guest sent, payload + TCP header — its retransmissions included (the
      // guest resends what the host side had no room for), so at least payload + 20 B a segment
      const hdrs = tcpTx.bytes - SIZE;
      t.true(hdrs >= 20 * tcpTx.frames, `nat.tcp.tx: payload + TCP headers (${hdrs} B over ${tcpTx.frames} segments)`);
      if (hdrs > 60 * tcpTx.frames) t.log(`${adapter}: the guest resent ${hdrs - 32 * tcpTx.frames} B or so (host socket full)`);
      const tapRead = stage(d, 'netns.tap.read');
      const parse = stage(d, 'nat.parse.tx');
      const ip = stage(d, 'nat.ip.tx');
      t.is(tapRead.frames, parse.frames, 'every frame read is parsed');
      t.is(tapRead.bytes, parse.bytes);
      t.true(parse.bytes - ip.bytes >= 14 * ip.frames, 'nat.ip.tx: the frames less their Ethernet headers');
      t.true(ip.bytes - tcpTx.bytes >= 20 * tcpTx.frames && ip.bytes - tcpTx.bytes - 20 * tcpTx.frames < 16_384, 'nat.tcp.tx: the IP packets less their IP headers');
      t.is(tapRead.copies, tapRead.frames, 'netns.tap.read: one copy per frame (the kernel, tap → slab)');
      t.is(tapRead.bytesCopied, tapRead.bytes);
      if (adapter === 'fd') t.is(write.bytesCopied, SIZE, 'fd adapter: one copy, frame → kernel');
      else t.true(write.bytesCopied >= 2 * SIZE && write.bytesCopied < 2.6 * SIZE, `node adapter: frame → ring → kernel (${write.bytesCopied} B copied)`);
      t.true(tcpTx.rewrites % 3 === 0 && tcpTx.rewrites >= 3 * (tcpTx.frames - 4) && tcpTx.rewrites <= 3 * tcpTx.frames, 'three translated fields per data segment (address and port, gateway → loopback)');
      const lu = ledger(d);
      const expected = adapter === 'fd' ? 2 : 3;
      t.true(lu.tx.copiesPerPayloadByte >= expected && lu.tx.copiesPerPayloadByte < expected + 0.3, `guest→host copies per payload byte ${lu.tx.copiesPerPayloadByte.toFixed(3)}`);
      t.log(`${adapter} guest→host: ${lu.tx.copiesPerPayloadByte.toFixed(3)} bytes copied per payload byte`);

      // ---- host → guest
      const down = await around(g, async () => {
        const r = await g.sh(`cat < /dev/tcp/10.0.2.2/${source.port} | wc -c`, 120_000);
        if (r.code !== 0) t.log(`host→guest did not finish (a 120 s timeout shows as code 1, no stderr); flows: ${JSON.stringify(await g.ctl({ cmd: 'flows' }))}`);
        t.is(r.code, 0, `host→guest: ${r.stderr}`);
        t.is(Number(r.stdout.trim()), SIZE);
      });
      const e = down.d;
      t.is(down.tcp.bytesToGuest, SIZE, 'per-flow bytes host→guest (first transmissions)');
      const read = stage(e, 'host.tcp.read');
      const retransmitted = down.tcp.retransmittedBytes ?? 0;
      if (adapter === 'fd') {
        t.is(read.bytes, SIZE + retransmitted, 'fd adapter: every byte peeked once, retransmissions again');
        t.is(read.bytesCopied, read.bytes);
      } else {
        t.true(read.bytesCopied >= 2 * SIZE, 'node adapter: kernel → ring → frame');
      }
      const tcpRx = stage(e, 'nat.tcp.rx');
      const rxHdrs = tcpRx.bytes - SIZE - retransmitted;
      t.true(rxHdrs >= 20 * tcpRx.frames && rxHdrs <= 60 * tcpRx.frames, `nat.tcp.rx: payload + TCP headers (${rxHdrs} B over ${tcpRx.frames} segments)`);
      const out = stage(e, 'nat.output.rx');
      const tapWrite = stage(e, 'netns.tap.write');
      t.is(out.frames, tapWrite.frames, 'every frame built is written to the tap');
      t.is(out.bytes, tapWrite.bytes);
      t.is(tapWrite.copies, tapWrite.frames, 'netns.tap.write: one copy per frame (the kernel)');
      t.is(tapWrite.bytesCopied, tapWrite.bytes);
      t.true(tcpRx.rewrites % 3 === 0 && tcpRx.rewrites >= 3 * Math.ceil(SIZE / 65536), 'three translated fields per data segment towards the guest');
      const ld = ledger(e);
      const exp = adapter === 'fd' ? 2 : 3;
      t.true(ld.rx.copiesPerPayloadByte >= exp - 0.05 && ld.rx.copiesPerPayloadByte < exp + 0.3, `host→guest copies per payload byte ${ld.rx.copiesPerPayloadByte.toFixed(3)}`);
      t.log(`${adapter} host→guest: ${ld.rx.copiesPerPayloadByte.toFixed(3)} bytes copied per payload byte`);
      const { code } = await g.stop();
      t.is(code, 0, `usernet's exit status; its stderr: ${g.stderr}`);
    });
  });
}

/** A node one-liner run in the bridged namespace: a TCP sink (prints the bytes) or source. */
function nsServer(kind: 'sink' | 'source', host: string, port: number): string[] {
  const js =
    kind === 'sink'
      ? `let n=0;require('net').createServer(s=>{s.on('data',d=>n+=d.length);s.on('end',()=>{console.log(n);process.exit(0)})}).listen(${port},'${host}',()=>console.log('listening'))`
      : `const b=Buffer.alloc(1<<20,90);require('net').createServer(s=>{let left=${SIZE};const p=()=>{while(left>0){const k=Math.min(left,b.length);left-=k;if(!s.write(b.subarray(0,k)))return void s.once('drain',p)}s.end(()=>process.exit(0))};p()}).listen(${port},'${host}',()=>console.log('listening'))`;
  return [process.execPath, '-e', js];
}

test('bridged (netns tap → TapBackend on a bridge): 8 MiB each way cross byte for byte, one copy per frame per tap, no rewrites', async (t) => {
  await withBridgedNet(
    async (bnet) => {
      await withSandbox(async (sb) => {
        const meter = new Meter();
        const ns = await sb.netns('bguest');
        const guestTap = NetnsTapPort.open({ netns: ns, ifName: 'tap0', meter });
        const tap = await bnet.openTap({ meter });
        sb.defer(async () => {
          await guestTap.close();
          await tap.close();
        });
        bridgeToTap(guestTap, tap);
        for (const argv of [
          ['ip', 'link', 'set', 'lo', 'up'],
          ['ip', 'addr', 'add', bnet.guestAddress(0), 'dev', 'tap0'],
          ['ip', 'link', 'set', 'tap0', 'mtu', String(bnet.mtu), 'up'],
        ]) {
          const r = await sb.exec(ns, argv);
          t.is(r.code, 0, `${argv.join(' ')}: ${r.stderr}`);
        }
        const started = async (argv: string[]): Promise<{ out: Promise<string> }> => {
          const p = sb.spawn(bnet.netns, argv);
          let text = '';
          p.stdout?.setEncoding('utf8');
          await new Promise<void>((resolve, reject) => {
            const timer = setTimeout(() => reject(new Error('server did not start')), 10_000);
            p.stdout?.on('data', (d: string) => {
              text += d;
              if (text.includes('listening')) {
                clearTimeout(timer);
                resolve();
              }
            });
          });
          return { out: new Promise<string>((r) => p.once('exit', () => r(text))) };
        };
        // ---- guest → host side
        const sink = await started(nsServer('sink', bnet.hostAddress, 7001));
        let before = meter.snapshot();
        const up = await sb.exec(ns, ['bash', '-c', `head -c ${SIZE} /dev/zero > /dev/tcp/${bnet.hostAddress}/7001`], 120_000);
        t.is(up.code, 0, up.stderr);
        t.regex(await sink.out, new RegExp(`\\b${SIZE}\\b`));
        await new Promise((r) => setTimeout(r, 300));
        let d = delta(meter.snapshot(), before);
        const rd = stage(d, 'netns.tap.read');
        const wr = stage(d, 'tap.write');
        t.is(wr.frames, rd.frames, 'every frame from the guest reached the bridge');
        t.is(wr.bytes, rd.bytes, 'byte for byte');
        t.true(rd.bytes >= SIZE, 'frames carry the payload plus headers');
        for (const s of [rd, wr]) {
          t.is(s.copies, s.frames, `${s.name}: one copy per frame`);
          t.is(s.bytesCopied, s.bytes);
          t.is(s.rewrites, 0, `${s.name}: no rewrites`);
        }
        const lu = ledger(d);
        t.log(`bridged guest→host: ${(lu.tx.bytesCopied / SIZE).toFixed(3)} bytes copied per payload byte (${(lu.tx.bytesCopied / lu.tx.payload).toFixed(3)} per frame byte)`);
        t.true(lu.tx.bytesCopied / SIZE >= 2 && lu.tx.bytesCopied / SIZE < 2.2);

        // ---- host side → guest
        const source = await started(nsServer('source', bnet.hostAddress, 7002));
        before = meter.snapshot();
        const down = await sb.exec(ns, ['bash', '-c', `cat < /dev/tcp/${bnet.hostAddress}/7002 | wc -c`], 120_000);
        t.is(down.code, 0, down.stderr);
        t.is(Number(down.stdout.trim()), SIZE);
        await source.out;
        await new Promise((r) => setTimeout(r, 300));
        d = delta(meter.snapshot(), before);
        const trd = stage(d, 'tap.read');
        const twr = stage(d, 'netns.tap.write');
        t.is(twr.frames, trd.frames, 'every frame from the bridge reached the guest');
        t.is(twr.bytes, trd.bytes);
        t.true(trd.bytes >= SIZE);
        for (const s of [trd, twr]) {
          t.is(s.copies, s.frames, `${s.name}: one copy per frame`);
          t.is(s.rewrites, 0);
        }
        const ld = ledger(d);
        t.log(`bridged host→guest: ${(ld.rx.bytesCopied / SIZE).toFixed(3)} bytes copied per payload byte`);
        t.true(ld.rx.bytesCopied / SIZE >= 2 && ld.rx.bytesCopied / SIZE < 2.2);
      });
    },
    { httpFileBytes: 0, iperfServers: 0 },
  );
});
