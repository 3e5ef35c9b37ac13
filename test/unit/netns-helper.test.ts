import { testIf } from '../helpers/env';
import { withSandbox, Sandbox } from '../helpers/netns';
import { execFileSync } from 'node:child_process';

const test = testIf('netns');

function namespaces(): string[] {
  return execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })
    .split('\n')
    .map((l) => l.split(' ')[0])
    .filter(Boolean);
}

test('sandbox makes namespaces and veths and removes them after success', async (t) => {
  let made: string[] = [];
  await withSandbox(async (sb) => {
    const a = await sb.netns('a');
    const b = await sb.netns('b');
    made = [a, b];
    await sb.veth(a, 'eth0', b, 'eth0');
    await sb.must(['ip', 'addr', 'add', '192.0.2.1/24', 'dev', 'eth0'], a);
    await sb.must(['ip', 'addr', 'add', '192.0.2.2/24', 'dev', 'eth0'], b);
    const r = await sb.exec(a, ['ping', '-c', '1', '-W', '5', '192.0.2.2']);
    t.is(r.code, 0, r.stdout + r.stderr);
    t.true(namespaces().includes(a));
  });
  for (const ns of made) t.false(namespaces().includes(ns));
});

test('sandbox cleans up after a throw and kills its processes', async (t) => {
  let ns = '';
  let pid = 0;
  await t.throwsAsync(
    withSandbox(async (sb: Sandbox) => {
      ns = await sb.netns('c');
      pid = sb.spawn(ns, ['sleep', '600']).pid ?? 0;
      throw new Error('boom');
    }),
    { message: 'boom' },
  );
  t.false(namespaces().includes(ns));
  t.throws(() => process.kill(pid, 0));
});
