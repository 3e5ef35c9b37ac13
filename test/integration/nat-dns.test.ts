/**
 * Name resolution from the guest namespace through usernet's DNS forwarder at 10.0.2.3:
 * glibc's resolver (`getent hosts`, which reads /etc/netns/NS/resolv.conf written by
 * `--configure`), busybox `nslookup` asking 10.0.2.3 directly, static `--dns-host` entries,
 * `host.usernet.internal` (the gateway), and a name only a dnsmasq the test starts on
 * 127.0.0.x knows, reached through `--dns-upstream`.
 */
import { spawn } from 'node:child_process';
import { testIf } from '../helpers/env';
import { withNatGuest } from '../helpers/nat-guest';
import { freePort } from '../helpers/host-servers';

const test = testIf('root', 'netns', 'tun', 'cmd:dnsmasq', 'cmd:busybox', 'cmd:getent');

test('getent, busybox nslookup, --dns-host, host.usernet.internal and a --dns-upstream dnsmasq all resolve', async (t) => {
  const port = await freePort('127.0.0.77');
  const dnsmasq = spawn(
    'dnsmasq',
    [
      '--keep-in-foreground',
      '--conf-file=/dev/null',
      '--no-resolv',
      '--no-hosts',
      '--listen-address=127.0.0.77',
      '--bind-interfaces',
      `--port=${port}`,
      '--user=root',
      '--pid-file=',
      '--address=/only-in-dnsmasq.usernet.test/192.0.2.77',
      '--log-facility=-',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  dnsmasq.on('error', () => {});
  t.teardown(() => {
    if (dnsmasq.exitCode === null && dnsmasq.pid) process.kill(dnsmasq.pid, 'SIGTERM');
  });
  await new Promise<void>((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`dnsmasq did not start: ${out}`)), 10_000);
    const onData = (d: Buffer): void => {
      out += d.toString();
      if (out.includes('started')) {
        clearTimeout(timer);
        resolve();
      }
    };
    dnsmasq.stdout?.on('data', onData);
    dnsmasq.stderr?.on('data', onData);
    dnsmasq.once('exit', (c) => reject(new Error(`dnsmasq exited ${c}: ${out}`)));
  });

  await withNatGuest({ args: ['--dns-upstream', `127.0.0.77:${port}`, '--dns-host', 'static.usernet.test=192.0.2.55'] }, async (g) => {
    const local = await g.exec(['getent', 'hosts', 'localhost']);
    t.is(local.code, 0, local.stderr);
    t.regex(local.stdout, /^(127\.0\.0\.1|::1)\s+localhost/m);

    const gw = await g.exec(['getent', 'ahostsv4', 'host.usernet.internal']);
    t.is(gw.code, 0, `getent host.usernet.internal: ${gw.stdout} ${gw.stderr}\n${g.stderr}`);
    t.regex(gw.stdout, /^10\.0\.2\.2\s/m);

    const ns = await g.exec(['busybox', 'nslookup', 'host.usernet.internal', '10.0.2.3']);
    t.is(ns.code, 0, ns.stdout + ns.stderr);
    t.regex(ns.stdout, /Address:\s*10\.0\.2\.2\b(?!:)/);

    const st = await g.exec(['busybox', 'nslookup', '-type=a', 'static.usernet.test', '10.0.2.3']);
    t.is(st.code, 0, st.stdout + st.stderr);
    t.regex(st.stdout, /Address:\s*192\.0\.2\.55\b/);

    const up = await g.exec(['getent', 'ahostsv4', 'only-in-dnsmasq.usernet.test']);
    t.is(up.code, 0, `${up.stdout} ${up.stderr}`);
    t.regex(up.stdout, /^192\.0\.2\.77\s/m);

    const up2 = await g.exec(['busybox', 'nslookup', '-type=a', 'only-in-dnsmasq.usernet.test', '10.0.2.3']);
    t.is(up2.code, 0, up2.stdout + up2.stderr);
    t.regex(up2.stdout, /Address:\s*192\.0\.2\.77\b/);

    // the host's /etc/hosts counts (getaddrinfo on the host): "localhost" asked of 10.0.2.3
    const hosts = await g.exec(['busybox', 'nslookup', '-type=a', 'localhost', '10.0.2.3']);
    t.is(hosts.code, 0, hosts.stdout + hosts.stderr);
    t.regex(hosts.stdout, /Address:\s*127\.0\.0\.1\b/);
  });
});
