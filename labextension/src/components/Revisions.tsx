/**
 * The deployment view's revision choice, as the notebook panel's ``revision=`` takes it: since the last
 * deploy (the default, re-read at every refresh so a redeploy starts anew), every revision (a series per
 * run of the same models), or one revision; and a line saying which revisions the charts show.
 */
import React from 'react';

import { IRevisionMark, IRevisions } from '../tokens';
import { startsNewSeries } from './Chart';

/** The selector's value for the server's default (no ``revision`` parameter). */
export const SINCE_DEPLOY = '';

/** ``1–3, 5`` for [1, 2, 3, 5]. */
export function revisionRanges(numbers: number[]): string {
  const runs: [number, number][] = [];
  for (const n of [...numbers].sort((a, b) => a - b)) {
    const last = runs[runs.length - 1];
    if (last && n === last[1] + 1) {
      last[1] = n;
    } else {
      runs.push([n, n]);
    }
  }
  return runs.map(([a, b]) => (a === b ? `${a}` : `${a}–${b}`)).join(', ');
}

export function RevisionSelect(props: {
  value: string;
  revisions: IRevisions | null;
  onChange: (value: string) => void;
}): JSX.Element | null {
  const { revisions } = props;
  if (revisions && !revisions.follows) {
    return null; // Prometheus's series carry no revision: nothing to choose
  }
  const known = [...(revisions?.known ?? [])].reverse();
  return (
    <select
      className="wolt-revision-select"
      aria-label="revisions to show"
      title="Which revisions' requests the charts show"
      value={props.value}
      onChange={e => props.onChange(e.target.value)}
    >
      <option value={SINCE_DEPLOY}>since the last deploy</option>
      <option value="all">all revisions (a series per run)</option>
      {known.map(r => (
        <option key={r} value={String(r)}>
          revision {r}
          {r === revisions?.current ? ' (current)' : ''}
        </option>
      ))}
    </select>
  );
}

/** Which revisions the charts show, and each revision that began in the window. */
export function RevisionLine(props: { revisions: IRevisions; marks: IRevisionMark[] }): JSX.Element {
  const { revisions, marks } = props;
  const shown = !revisions.follows
    ? 'every revision (the source does not tell revisions apart)'
    : revisions.read === null
      ? 'every revision, a series per run of the same models'
      : `revision${revisions.read.length > 1 ? 's' : ''} ${revisionRanges(revisions.read)}${
          revisions.asked === 'since-deploy' ? ' (since the last deploy)' : ''
        }`;
  const clock = (t: number) =>
    new Date(t).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
  return (
    <div className="wolt-revision-line">
      <span className="wolt-revision-shown">showing {shown}</span>
      {marks.length > 0 && (
        <span className="wolt-revision-marks">
          began in this window:
          {marks.map(m => (
            <span key={m.revision} className="wolt-revision-chip" data-revision={m.revision}>
              <span className={`wolt-revision-tick${startsNewSeries(m) ? '' : ' wolt-revision-tick-same'}`} />
              {m.label} {clock(m.time)}
            </span>
          ))}
        </span>
      )}
    </div>
  );
}
