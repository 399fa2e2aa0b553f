/**
 * A small SVG line chart: one line per column of a series, a shared y axis from 0 to the maximum, and a
 * vertical mark where each deployment revision began (a redeploy starts new series there).
 */
import React from 'react';

import { IRevisionMark, ISeries } from '../tokens';

const W = 320;
const H = 140;
const PAD = { left: 50, right: 8, top: 14, bottom: 20 };

/**
 * A series of one run of the same models, as the server names it once several runs are shown
 * (``main (r2)``, ``shadow (r1) vs main (r1)``): the variant and the run's first revision; run null for a
 * plain variant name.
 */
export function seriesRun(column: string): { variant: string; run: number | null } {
  const name = column.includes(' vs ') ? column.split(' vs ')[1] : column;
  const match = /^(.*) \(r(\d+)\)$/.exec(name);
  return match ? { variant: match[1], run: Number(match[2]) } : { variant: name, run: null };
}

/** A variant keeps its colour in every chart and every run; a shadow-agreement column takes its live variant's. */
export function colorIndex(names: string[], column: string): number {
  return Math.max(0, names.indexOf(seriesRun(column).variant)) % 6;
}

/** A redeploy (other models) starts new series; a change that kept the models (traffic) only continues them. */
export const startsNewSeries = (mark: IRevisionMark): boolean => !mark.label.includes('same models');

export function LineChart(props: {
  title: string;
  series: ISeries;
  names: string[]; // every variant, for stable colours across charts
  format?: (v: number) => string;
  /** the time axis, epoch ms (default: the series' first and last time) */
  window?: [number, number];
  marks?: IRevisionMark[];
}): JSX.Element {
  const { series, names } = props;
  const fmt = props.format ?? ((v: number) => v.toPrecision(3));
  const columns = Object.keys(series.columns);
  const values = columns.flatMap(c => series.columns[c].filter((v): v is number => v !== null));
  const hasData = values.length > 0 && series.time.length > 1;
  const [tMin, tMax] = props.window ?? [series.time[0] ?? 0, series.time[series.time.length - 1] ?? 1];
  const yMax = Math.max(...values, 0) || 1;
  const x = (t: number) =>
    PAD.left + ((Math.min(tMax, Math.max(tMin, t)) - tMin) / Math.max(1, tMax - tMin)) * (W - PAD.left - PAD.right);
  const y = (v: number) => H - PAD.bottom - (v / yMax) * (H - PAD.top - PAD.bottom);
  const clock = (t: number) => new Date(t).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  const marks = (props.marks ?? []).filter(m => m.time >= tMin && m.time <= tMax);
  // a mark's label sits right of its line (left of it near the right edge), on the first of three rows where
  // it does not cover a neighbour's label
  const LABEL_W = 14;
  const leftOfLine = (m: IRevisionMark) => x(m.time) > W - PAD.right - LABEL_W;
  const rowEnds = [-Infinity, -Infinity, -Infinity];
  const labelRow = marks.map(m => {
    const start = leftOfLine(m) ? x(m.time) - LABEL_W : x(m.time);
    const free = rowEnds.findIndex(end => start >= end);
    const row = free >= 0 ? free : rowEnds.indexOf(Math.min(...rowEnds));
    rowEnds[row] = start + LABEL_W;
    return row;
  });
  // the newest run is drawn solid, earlier runs dashed: after a redeploy the old line visibly ends
  const runs = columns.map(c => seriesRun(c).run).filter((r): r is number => r !== null);
  const newest = runs.length ? Math.max(...runs) : null;
  const earlier = (c: string) => {
    const run = seriesRun(c).run;
    return run !== null && run !== newest;
  };
  return (
    <figure className="wolt-chart" data-chart={props.title}>
      <figcaption>{props.title}</figcaption>
      <svg viewBox={`0 0 ${W} ${H}`} width="100%" role="img" aria-label={props.title}>
        <line x1={PAD.left} y1={H - PAD.bottom} x2={W - PAD.right} y2={H - PAD.bottom} className="wolt-axis" />
        <line x1={PAD.left} y1={PAD.top} x2={PAD.left} y2={H - PAD.bottom} className="wolt-axis" />
        <text x={PAD.left - 4} y={PAD.top + 8} className="wolt-tick" textAnchor="end">
          {fmt(yMax)}
        </text>
        <text x={PAD.left - 4} y={H - PAD.bottom} className="wolt-tick" textAnchor="end">
          0
        </text>
        {(hasData || props.window) && (
          <>
            <text x={PAD.left} y={H - 4} className="wolt-tick">
              {clock(tMin)}
            </text>
            <text x={W - PAD.right} y={H - 4} className="wolt-tick" textAnchor="end">
              {clock(tMax)}
            </text>
          </>
        )}
        {marks.map((m, i) => (
          <g
            key={m.revision}
            className={`wolt-revision-mark${startsNewSeries(m) ? '' : ' wolt-revision-mark-same'}`}
            data-revision={m.revision}
          >
            <title>{`${m.label} began ${new Date(m.time).toLocaleTimeString()}`}</title>
            <line x1={x(m.time)} y1={PAD.top - 2} x2={x(m.time)} y2={H - PAD.bottom} />
            <text
              x={leftOfLine(m) ? x(m.time) - 2 : x(m.time) + 2}
              textAnchor={leftOfLine(m) ? 'end' : 'start'}
              y={PAD.top - 4 + labelRow[i] * 9}
              className="wolt-revision-label"
            >
              r{m.revision}
            </text>
          </g>
        ))}
        {hasData &&
          columns.map(c => {
            const points = series.time
              .map((t, i) => [t, series.columns[c][i]] as const)
              .filter(([, v]) => v !== null)
              .map(([t, v]) => `${x(t).toFixed(1)},${y(v as number).toFixed(1)}`)
              .join(' ');
            return (
              <polyline
                key={c}
                points={points}
                className={`wolt-line wolt-stroke-${colorIndex(names, c)}${earlier(c) ? ' wolt-line-earlier' : ''}`}
                data-series={c}
              />
            );
          })}
        {!hasData && (
          <text x={W / 2} y={H / 2} className="wolt-nodata" textAnchor="middle">
            no data yet
          </text>
        )}
      </svg>
      <div className="wolt-chart-legend">
        {columns.map(c => (
          <span key={c}>
            <span
              className={`wolt-swatch wolt-color-${colorIndex(names, c)}${earlier(c) ? ' wolt-swatch-earlier' : ''}`}
            />
            {c}
          </span>
        ))}
      </div>
    </figure>
  );
}
