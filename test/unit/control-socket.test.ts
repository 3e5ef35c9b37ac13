import test from 'ava';
import net from 'node:net';
import { spawnSync } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { mkdtempSync, rmSync, statSync, writeFileSync, existsSync } from 'node:fs';
import { ControlServer, type ControlHandlers } from '../../src/control/server';
import { ControlClient, controlRequest } from '../../src/control/client';
import { ControlError, MAX_REQUEST_LINE } from '../../src/control/protocol';

function tmpSocket(t: { teardown(fn: () => void): void }): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'usernet-ctl-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return path.join(dir, 'control.sock');
}

function handlers(): ControlHandlers & { rules: string[] } {
  const rules: string[] = [];
  return {
    rules,
    'hostfwd.add': ({ rule }) => {
      if (!rule.startsWith('tcp:') && !rule.startsWith('udp:')) throw Object.assign(new Error('bad rule'), { code: 'EINVAL' });
      if (rules.includes(rule)) throw Object.assign(new Error('exists'), { code: 'EEXIST' });
      rules.push(rule);
      return { rule };
    },
    'hostfwd.remove': ({ rule }) => {
      const i = rules.indexOf(rule);
      if (i < 0) throw Object.assign(new Error('no such forward'), { code: 'ENOENT' });
      rules.splice(i, 1);
      return { rule };
    },
    'hostfwd.list': () => rules.map((rule) => ({ rule })),
    stats: async ({ reset }) => ({ stages: [{ name: 'tap.read', frames: 1 }], reset: reset === true }),
    info: () => {
      throw new TypeError('boom'); // a bug in a handler must become an error reply
    },
  };
}

/** Send raw bytes, collect response lines until `count` arrived (or the socket closed). */
function rawExchange(p: string, bytes: string | Buffer, count: number): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const s = net.connect(p);
    let buf = '';
    const lines: string[] = [];
    s.setEncoding('utf8');
    s.on('data', (d: string) => {
      buf += d;
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        lines.push(buf.slice(0, nl));
        buf = buf.slice(nl + 1);
      }
      if (lines.length >= count) {
        s.destroy();
        resolve(lines);
      }
    });
    s.on('close', () => resolve(lines));
    s.on('error', reject);
    s.write(bytes);
  });
}

test('hostfwd add/list/remove round trip, in order, over one connection', async (t) => {
  const p = tmpSocket(t);
  const h = handlers();
  const server = await ControlServer.listen(p, h);
  t.teardown(() => server.close());
  t.is(statSync(p).mode & 0o777, 0o600);
  const c = await ControlClient.connect(p);
  const [a, b, list] = await Promise.all([
    c.request({ cmd: 'hostfwd.add', rule: 'tcp:127.0.0.1:8080-:80' }),
    c.request({ cmd: 'hostfwd.add', rule: 'udp::5353-:53' }),
    c.request({ cmd: 'hostfwd.list' }),
  ]);
  t.deepEqual(a, { rule: 'tcp:127.0.0.1:8080-:80' });
  t.deepEqual(b, { rule: 'udp::5353-:53' });
  t.deepEqual(list, [{ rule: 'tcp:127.0.0.1:8080-:80' }, { rule: 'udp::5353-:53' }]);
  await c.request({ cmd: 'hostfwd.remove', rule: 'udp::5353-:53' });
  const err = await t.throwsAsync(c.request({ cmd: 'hostfwd.remove', rule: 'udp::5353-:53' }));
  t.true(err instanceof ControlError);
  t.is((err as ControlError).code, 'ENOENT');
  t.deepEqual(await c.request({ cmd: 'stats', reset: true }), { stages: [{ name: 'tap.read', frames: 1 }], reset: true });
  c.close();
  t.deepEqual(await controlRequest(p, { cmd: 'hostfwd.list' }), [{ rule: 'tcp:127.0.0.1:8080-:80' }]);
});

test('malformed requests get error replies and the server keeps serving', async (t) => {
  const p = tmpSocket(t);
  const server = await ControlServer.listen(p, handlers());
  t.teardown(() => server.close());
  const bad = [
    'not json',
    '[]',
    'null',
    '42',
    '{}',
    '{"cmd":"nope"}',
    '{"cmd":"hostfwd.add"}',
    '{"cmd":"hostfwd.add","rule":7}',
    '{"id":{"x":1},"cmd":"hostfwd.list"}',
    '{"id":5,"cmd":"stats","reset":"yes"}',
    '\u0000\u0001\u00ff',
    '{"cmd":"__proto__"}',
  ];
  const lines = await rawExchange(p, bad.join('\n') + '\n', bad.length);
  t.is(lines.length, bad.length);
  for (const l of lines) {
    const r = JSON.parse(l);
    t.false(r.ok, l);
    t.is(r.error.code, 'EBADREQ', l);
  }
  t.is(JSON.parse(lines[9]).id, 5); // the id is echoed even when the request is bad
  // a handler that throws a plain bug: EINTERNAL, not a crash
  const c = await ControlClient.connect(p);
  const r = await c.raw('{"id":"x","cmd":"info"}');
  t.deepEqual(r, { id: 'x', ok: false, error: { code: 'EINTERNAL', message: 'boom' } });
  // a handler's own error code is kept
  const r2 = await c.raw('{"id":2,"cmd":"hostfwd.add","rule":"sctp:1"}');
  t.deepEqual(r2, { id: 2, ok: false, error: { code: 'EINVAL', message: 'bad rule' } });
  c.close();
  t.deepEqual(await controlRequest(p, { cmd: 'hostfwd.list' }), []);
});

test('an over-long line is refused and that connection closed; others unaffected', async (t) => {
  const p = tmpSocket(t);
  const server = await ControlServer.listen(p, handlers());
  t.teardown(() => server.close());
  const huge = Buffer.alloc(MAX_REQUEST_LINE * 2 + 10, 0x61); // no newline at all
  const lines = await rawExchange(p, huge, 1);
  t.is(lines.length, 1);
  t.is(JSON.parse(lines[0]).error.code, 'EBADREQ');
  // requests split across many writes still work
  const lines2 = await new Promise<string[]>((resolve) => {
    const s = net.connect(p);
    const req = '{"id":1,"cmd":"hostfwd.list"}\n';
    let out = '';
    s.setEncoding('utf8');
    s.on('data', (d: string) => {
      out += d;
      if (out.endsWith('\n')) {
        s.destroy();
        resolve(out.trim().split('\n'));
      }
    });
    let i = 0;
    const tick = (): void => {
      if (i < req.length) {
        s.write(req[i++]);
        setImmediate(tick);
      }
    };
    tick();
  });
  t.deepEqual(JSON.parse(lines2[0]), { id: 1, ok: true, result: [] });
});

test('stale socket is replaced, a live one or a regular file is not; close unlinks', async (t) => {
  const p = tmpSocket(t);
  // stale: a socket file nobody listens on (bound by a process that exited without unlinking)
  spawnSync(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(p)}, () => process.kill(process.pid, 'SIGKILL'))`], { stdio: 'ignore' });
  t.true(statSync(p).isSocket());
  const s1 = await ControlServer.listen(p, handlers());
  const e = await t.throwsAsync(ControlServer.listen(p, handlers()));
  t.is((e as { code?: string }).code, 'EADDRINUSE');
  await s1.close();
  t.false(existsSync(p));
  writeFileSync(p, 'precious');
  const e2 = await t.throwsAsync(ControlServer.listen(p, handlers()));
  t.is((e2 as { code?: string }).code, 'EEXIST');
  t.true(existsSync(p));
});

test('abort signal closes the server; client sees ECONNRESET for pending work', async (t) => {
  const p = tmpSocket(t);
  const ac = new AbortController();
  let release: () => void = () => {};
  const h = handlers();
  h.stats = () => new Promise((r) => (release = () => r({}))); // never answers until released
  const server = await ControlServer.listen(p, h, { signal: ac.signal });
  const c = await ControlClient.connect(p);
  const pending = c.request({ cmd: 'stats' });
  await new Promise((r) => setTimeout(r, 50));
  ac.abort();
  const e = await t.throwsAsync(pending);
  t.is((e as ControlError).code, 'ECONNRESET');
  release();
  await server.close();
  t.false(existsSync(p));
  const e2 = await t.throwsAsync(controlRequest(p, { cmd: 'info' }));
  t.true((e2 as ControlError).code === 'ENOENT' || (e2 as ControlError).code === 'ECONNREFUSED');
});
