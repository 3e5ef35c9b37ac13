/**
 * iperf3 through usernet's NAT: the client in the guest namespace, `iperf3 -s` on the host's
 * 127.0.0.1 (reached as 10.0.2.2). Guest→host, host→guest (-R) and 8 parallel streams must
 * complete without error; the numbers themselves are the benchmark's business (bench/), not a
 * test's.
 */
import { testIf } from '../helpers/env';
import { withNatGuest } from '../helpers/nat-guest';
import { startIperf3Server } from '../helpers/host-servers';

const test = testIf('root', 'netns', 'tun', 'cmd:iperf3');

interface IperfResult {
  error?: string;
  end?: { sum_received?: { bytes: number; bits_per_second: number }; sum_sent?: { bytes: number } };
}

test('iperf3 guest→host, host→guest (-R) and -P 8 complete with no error', async (t) => {
  const server = await startIperf3Server();
  t.teardown(() => server.close());
  await withNatGuest({}, async (g) => {
    for (const extra of [[], ['-R'], ['-P', '8']]) {
      const r = await g.exec(['iperf3', '-c', '10.0.2.2', '-p', String(server.port), '-t', '3', '-J', ...extra], 60_000);
      const label = `iperf3 ${extra.join(' ') || '(guest→host)'}`;
      t.is(r.code, 0, `${label}: ${r.stdout.slice(-500)} ${r.stderr}`);
      const j = JSON.parse(r.stdout) as IperfResult;
      t.falsy(j.error, label);
      t.true((j.end?.sum_received?.bytes ?? 0) > 0, `${label} moved data`);
      t.log(`${label}: ${((j.end?.sum_received?.bits_per_second ?? 0) / 1e9).toFixed(2)} Gbit/s`);
    }
  });
});
