/**
 * Bar charts of benchmark results as SVG files, drawn in Node without a browser: a vega-lite
 * spec is compiled to a vega spec (vega-lite `compile`), parsed into a headless vega View
 * (renderer 'none') and serialised with `View.toSVG()`.
 *
 * vega and vega-lite ship only as ES modules (with top-level await), which a CommonJS build
 * cannot `require`; they are loaded with a real dynamic `import()` that tsc leaves alone.
 * Only the few members used here are typed (the packages' own types need a newer module
 * resolution than this project's).
 */

interface VegaLiteModule {
  compile(spec: object): { spec: object };
}
interface VegaView {
  toSVG(): Promise<string>;
  finalize(): void;
}
interface VegaModule {
  parse(spec: object): unknown;
  View: new (runtime: unknown, opts: { renderer: 'none' }) => VegaView;
}

// tsc (module: commonjs) would turn `import()` into `require()`; this stays a real import.
const importEsm = new Function('specifier', 'return import(specifier)') as (specifier: string) => Promise<unknown>;

/** Render a vega-lite spec to SVG text. */
export async function vegaLiteToSvg(spec: object): Promise<string> {
  const vl = (await importEsm('vega-lite')) as VegaLiteModule;
  const vega = (await importEsm('vega')) as VegaModule;
  const compiled = vl.compile(spec).spec;
  const view = new vega.View(vega.parse(compiled), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

export interface BarDatum {
  /** One group of bars (a row of the table). */
  group: string;
  /** One bar in the group (a column, e.g. a direction). */
  series: string;
  value: number;
}

/** Horizontal grouped bars: one group per `group`, one bar per `series`, value on x. */
export function groupedBarSpec(data: readonly BarDatum[], opts: { title: string; valueTitle: string; width?: number }): object {
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: opts.title,
    width: opts.width ?? 520,
    data: { values: data },
    mark: { type: 'bar', tooltip: true },
    encoding: {
      y: { field: 'group', type: 'nominal', title: null, sort: null, axis: { labelLimit: 320 } },
      yOffset: { field: 'series', type: 'nominal', sort: null },
      x: { field: 'value', type: 'quantitative', title: opts.valueTitle },
      color: { field: 'series', type: 'nominal', sort: null, title: null, legend: { orient: 'bottom' } },
    },
    config: { font: 'sans-serif', view: { stroke: null } },
  };
}
