/**
 * The meter's side of the control socket, shared by every way `usernet run` serves (netns,
 * VM frontends): `stats` (the ledger: every stage's counters, plus the NAT's summary and TCP
 * totals), `flows` (one row per NAT flow with its counters) and `trace` (a stream of packet
 * journeys, meter/trace.ts, filtered as the client asked, until it disconnects or `count` is
 * reached). Creating the handlers also tells the tracer how to see the NAT's host side.
 */
import { globalMeter, METER_ON, type Meter } from '../meter/meter';
import { tracer, type TraceFilter } from '../meter/trace';
import { NatView } from '../backends/nat/trace-view';
import type { NatStack } from '../backends/nat/stack';
import type { ControlRequest } from '../control/protocol';
import type { ControlSession } from '../control/server';

export interface MeterControlOptions {
  meter?: Meter;
  /** The NAT stack, when the instance has one (bridged instances have none). */
  stack: NatStack | null;
  startedAt: number;
  /** More fields for the `stats` result (the instance's own summary). */
  extra?: () => Record<string, unknown>;
}

type TraceRequest = Extract<ControlRequest, { cmd: 'trace' }>;

export function meterControlHandlers(o: MeterControlOptions) {
  const meter = o.meter ?? globalMeter;
  const view = o.stack ? new NatView(o.stack) : null;
  if (view) tracer.natView = view;
  return {
    stats: ({ reset }: { reset?: boolean }) => {
      const snapshot = {
        pid: process.pid,
        uptimeSeconds: Math.round((Date.now() - o.startedAt) / 1000),
        rssBytes: process.memoryUsage.rss(),
        meter: METER_ON ? 'on' : 'off',
        time: Date.now(),
        traceSubscribers: tracer.subscriberCount,
        stages: meter.snapshot(),
        ...(o.stack ? { nat: o.stack.stats(), tcp: view?.tcpTotals() ?? null } : {}),
        ...(o.extra?.() ?? {}),
      };
      if (reset) meter.reset();
      return snapshot;
    },
    flows: () => ({ flows: view ? view.flows() : [], tcp: view?.tcpTotals() ?? null }),
    trace: (req: TraceRequest, session: ControlSession) => {
      const filter: TraceFilter = {
        proto: req.proto,
        port: req.port,
        address: req.address,
        dir: req.dir,
        path: req.path,
        sample: req.sample,
        payloadOnly: req.payloadOnly,
      };
      let sent = 0;
      let stopped = false;
      let unsubscribe: () => void = () => {};
      const stop = (): void => {
        if (stopped) return;
        stopped = true;
        unsubscribe();
      };
      unsubscribe = tracer.subscribe(filter, (record) => {
        if (stopped) return;
        session.push({ event: 'trace', record });
        if (req.count !== undefined && ++sent >= req.count) {
          stop();
          session.push({ event: 'trace-end', reason: 'count', dropped: session.dropped });
        }
      });
      session.onClose(stop);
      return { tracing: true, meter: METER_ON ? 'on' : 'off', natView: view !== null };
    },
  };
}
