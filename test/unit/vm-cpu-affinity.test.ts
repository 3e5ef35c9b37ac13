import test from 'ava';
import { allowedCpus, checkCpuList, formatCpuList, parseCpuList } from '../../src/vm/cpu-affinity';

test('CPU lists in Linux list format parse to sorted unique CPUs and format back', (t) => {
  t.deepEqual(parseCpuList('0'), [0]);
  t.deepEqual(parseCpuList('0-3'), [0, 1, 2, 3]);
  t.deepEqual(parseCpuList(' 3,0-1,1 '), [0, 1, 3]);
  t.is(formatCpuList([0, 1, 2, 5, 7, 8]), '0-2,5,7-8');
  t.is(formatCpuList(parseCpuList('2,0,1')), '0-2');
});

test('bad CPU lists are refused with RangeError', (t) => {
  for (const bad of ['', 'x', '1-', '3-1', '0,,1', '-1', '0-99999']) {
    t.throws(() => parseCpuList(bad), { instanceOf: RangeError }, bad);
  }
});

test('checkCpuList accepts the CPUs this process may use and refuses others', (t) => {
  const mine = allowedCpus();
  t.true(mine.length >= 1);
  t.is(checkCpuList(String(mine[0])), String(mine[0]));
  t.throws(() => checkCpuList('4095'), { instanceOf: RangeError, message: /not available/ });
});
