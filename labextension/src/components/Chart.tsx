/** A small SVG line chart: one line per column of a series, a shared y axis from 0 to the maximum. */
import React from 'react';

import { ISeries } from '../tokens';

const W = 320;
const H = 140;
const PAD = { left: 44, right: 8, top: 8, bottom: 20 };

/** A variant keeps its colour in every chart; a shadow-agreement column takes its live variant's colour. */
export function colorIndex(names: string[], column: string): number {
  const name = column.includes(' vs ') ? column.split(' vs ')[1] : column;
  return Math.max(0, names.indexOf(name)) % 6;
}

export function LineChart(props: {
  title: string;
  series: ISeries;
  names: string[]; // every variant, for stable colours across charts
  format?: (v: number) => string;
}): JSX.Element {
  const { series, names } = props;
  const fmt = props.format ?? ((v: number) => v.toPrecision(3));
  const columns = Object.keys(series.columns);
  const values = columns.flatMap(c => series.columns[c].filter((v): v is number => v !== null));
  const hasData = values.length > 0 && series.time.length > 1;
  const tMin = series.time[0] ?? 0;
  const tMax = series.time[series.time.length - 1] ?? 1;
  const yMax = Math.max(...values, 0) || 1;
  const x = (t: number) => PAD.left + ((t - tMin) / Math.max(1, tMax - tMin)) * (W - PAD.left - PAD.right);
  const y = (v: number) => H - PAD.bottom - (v / yMax) * (H - PAD.top - PAD.bottom);
  const clock = (t: number) => new Date(t).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
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
        {hasData && (
          <>
            <text x={PAD.left} y={H - 4} className="wolt-tick">
              {clock(tMin)}
            </text>
            <text x={W - PAD.right} y={H - 4} className="wolt-tick" textAnchor="end">
              {clock(tMax)}
            </text>
          </>
        )}
        {hasData &&
          columns.map(c => {
            const points = series.time
              .map((t, i) => [t, series.columns[c][i]] as const)
              .filter(([, v]) => v !== null)
              .map(([t, v]) => `${x(t).toFixed(1)},${y(v as number).toFixed(1)}`)
              .join(' ');
            return <polyline key={c} points={points} className={`wolt-line wolt-stroke-${colorIndex(names, c)}`} data-series={c} />;
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
            <span className={`wolt-swatch wolt-color-${colorIndex(names, c)}`} />
            {c}
          </span>
        ))}
      </div>
    </figure>
  );
}
