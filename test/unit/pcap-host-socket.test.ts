import test from 'ava';
import type { HostConnectOptions, HostSocket, HostSocketEvents, HostSocketFactory } from '../../src/backends/nat/tcp-host';
import { Meter } from '../../src/meter/meter';
import { HostCapture } from '../../src/meter/pcap-host';
import type { CaptureWriter } from '../../src/meter/pcap';

test('a captured host socket passes keep-alive on to the real one (--pcap-host keeps keep-alives honoured)', (t) => {
  const calls: number[][] = [];
  const inner: HostSocketFactory = {
    connect: (_o: HostConnectOptions, _e: HostSocketEvents): HostSocket =>
      ({ keepAlive: (idle: number, interval: number, count: number) => (calls.push([idle, interval, count]), true) }) as unknown as HostSocket,
  };
  const writer = { addInterface: () => 0 } as unknown as CaptureWriter;
  const capture = new HostCapture(writer, { meter: new Meter() });
  const events = {} as HostSocketEvents;
  const sock = capture.wrap(inner).connect({} as HostConnectOptions, events);
  t.true(sock.keepAlive?.(60, 6, 9));
  t.deepEqual(calls, [[60, 6, 9]]);
  // an adapter without keep-alive says so through the wrapper too
  const plain = capture.wrap({ connect: () => ({}) as HostSocket }).connect({} as HostConnectOptions, events);
  t.false(plain.keepAlive?.(60, 6, 9));
});
