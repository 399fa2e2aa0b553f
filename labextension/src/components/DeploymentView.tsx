/**
 * The main-area view of one deployment: live charts per variant from the server API (never a kernel), the
 * summary table, and the automatic update service's rollout timeline. Refreshes only while visible.
 *
 * The charts follow the deployment revision as the notebook panel does: by default the revisions since the
 * last deploy (so a redeploy under the same name starts new series at the next refresh), or every revision
 * as a series per run, each revision's start marked on the time axis.
 */
import { Dialog, Notification, showDialog } from '@jupyterlab/apputils';
import { ReactWidget, UseSignal } from '@jupyterlab/ui-components';
import { Message } from '@lumino/messaging';
import { Signal } from '@lumino/signaling';
import React from 'react';

import { Snippets, WoltModel } from '../model';
import { ApiError } from '../request';
import { IDeployment, IMonitorData, IRollout, IUpdateDecision } from '../tokens';
import { LineChart, seriesRun } from './Chart';
import { RevisionLine, RevisionSelect, SINCE_DEPLOY } from './Revisions';
import { TrafficBar } from './TrafficBar';

const RANGES = ['5m', '15m', '30m', '1h', '6h', '24h'];

export class DeploymentView extends ReactWidget {
  constructor(
    readonly model: WoltModel,
    readonly name: string
  ) {
    super();
    this.addClass('wolt-deployment-view');
    this.id = `wolt-deployment-${name}`;
    this.title.label = `wolt: ${name}`;
    this.title.closable = true;
  }

  range = '15m';
  /** the server's ``revision`` parameter: SINCE_DEPLOY (its default), 'all' or a number */
  revision = SINCE_DEPLOY;
  data: IMonitorData | null = null;
  error: string | null = null;
  decisions: IUpdateDecision[] | null = null;
  rollout: IRollout | null = null;
  updatesNote: string | null = null;
  /** why the running update service's looks keep failing (the registry unreachable, …); null when well */
  serviceFailing: string | null = null;

  async refresh(): Promise<void> {
    const step = this.range === '5m' || this.range === '15m' ? '5s' : '15s';
    try {
      this.data = await this.model.metrics(this.name, this.range, step, this.revision);
      this.error = null;
      this._followRevision(this.data.revisions.current);
    } catch (error: any) {
      this.error = error.message;
    }
    try {
      const updates = await this.model.updates(this.name);
      this._notifyNew(updates.decisions);
      this.decisions = updates.decisions;
      this.rollout = updates.rollout ?? null;
      this.serviceFailing = updates.failing ?? null;
      this.updatesNote = null;
    } catch (error: any) {
      this.decisions = null;
      this.rollout = null;
      this.serviceFailing = null;
      this.updatesNote =
        error instanceof ApiError && error.status === 501 ? error.message : `updates: ${error.message}`;
    }
    this._changed.emit();
  }

  /** A revision the sidebar's list does not know yet (a redeploy from a notebook): refresh the list, so the
   * traffic bar here and the sidebar show the variants the new revision serves. */
  private _followRevision(current: number | null): void {
    const listed = this.model.deployments.find(d => d.name === this.name);
    if (current !== null && listed && listed.revision !== current && !this.model.loading) {
      void this.model.refresh().then(() => this._changed.emit());
    }
  }

  /** Promote and roll-back decisions of the update service also as notifications (once each). */
  private _notifyNew(decisions: IUpdateDecision[]): void {
    if (this.decisions !== null) {
      for (const d of decisions.slice(this.decisions.length)) {
        if (d.action === 'promote' || d.action === 'rollback') {
          Notification.info(`${this.name}: ${d.action}${d.reason ? ` — ${d.reason}` : ''}`, { autoClose: 10000 });
        }
      }
    }
  }

  /** A person's command to the rollout; promote-now and abort are confirmed first. Says what became of it. */
  async steer(command: string): Promise<void> {
    const asks: { [command: string]: [string, string] } = {
      'promote-now': [
        'Promote now',
        `The candidate becomes the champion of ${this.name} now, before its rollout ends.`
      ],
      abort: ['Abort', `The champion serves ${this.name} alone now; the candidate is rejected.`]
    };
    const ask = asks[command];
    if (ask) {
      const result = await showDialog({
        title: `${ask[0]}: ${this.name}`,
        body: `${ask[1]} (${Snippets.steer(this.name, command)})`,
        buttons: [Dialog.cancelButton(), (command === 'abort' ? Dialog.warnButton : Dialog.okButton)({ label: ask[0] })]
      });
      if (!result.button.accept) {
        return;
      }
    }
    try {
      const steered = await this.model.steer(this.name, command);
      Notification.info(steered.message, { autoClose: 10000 });
    } catch (error: any) {
      Notification.error(`${this.name}: ${error.message}`, { autoClose: false });
    }
    await this.refresh();
  }

  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    void this.refresh();
    this._timer = window.setInterval(() => void this.refresh(), Math.max(2, this.model.refreshInterval) * 1000);
  }

  protected onAfterHide(msg: Message): void {
    super.onAfterHide(msg);
    this._stop();
  }

  protected onBeforeDetach(msg: Message): void {
    this._stop();
    super.onBeforeDetach(msg);
  }

  dispose(): void {
    this._stop();
    super.dispose();
  }

  private _stop(): void {
    if (this._timer !== null) {
      window.clearInterval(this._timer);
      this._timer = null;
    }
  }

  render(): JSX.Element {
    return (
      <UseSignal signal={this._changed}>
        {() => <ViewBody view={this} deployment={this.model.deployments.find(d => d.name === this.name)} />}
      </UseSignal>
    );
  }

  private _changed = new Signal<DeploymentView, void>(this);
  private _timer: number | null = null;
}

const ms = (v: number) => `${(v * 1000).toPrecision(3)} ms`;
const pct = (v: number) => `${(v * 100).toPrecision(3)}%`;

function ViewBody({ view, deployment }: { view: DeploymentView; deployment?: IDeployment }): JSX.Element {
  const data = view.data;
  // colours by variant: the current revision's first, then those only earlier revisions served (``challenger (r1)``)
  const names = [
    ...new Set([
      ...(deployment?.variants.map(v => v.name) ?? []),
      ...(data?.summary.map(s => seriesRun(String(s.variant)).variant) ?? [])
    ])
  ];
  // the metrics answer is read at every refresh of this view, the sidebar's list only while it polls
  const current = data?.revisions.current ?? deployment?.revision ?? null;
  const time = data ? { window: [data.since, data.until] as [number, number], marks: data.revision_marks } : {};
  return (
    <div className="wolt-view">
      <div className="wolt-view-header">
        <h2>{view.name}</h2>
        {deployment && (
          <span className="wolt-meta">
            <span className={`wolt-status wolt-status-${deployment.status}`}>{deployment.status}</span>{' '}
            {deployment.target} ·{' '}
            <span className="wolt-current-revision" data-revision={current ?? ''}>
              revision {current ?? '–'}
            </span>
            {deployment.url ? ` · ${deployment.url}` : ''}
          </span>
        )}
        <select
          className="wolt-range"
          value={view.range}
          onChange={e => {
            view.range = e.target.value;
            void view.refresh();
          }}
        >
          {RANGES.map(r => (
            <option key={r}>{r}</option>
          ))}
        </select>
        <RevisionSelect
          value={view.revision}
          revisions={data?.revisions ?? null}
          onChange={value => {
            view.revision = value;
            void view.refresh();
          }}
        />
        <button className="wolt-button" onClick={() => void view.refresh()}>
          ↻
        </button>
      </div>
      {deployment && <TrafficBar variants={deployment.variants} />}
      {view.error && <div className="wolt-error">{view.error}</div>}
      {data?.message && <div className="wolt-message">{data.message}</div>}
      {data && (
        <>
          <RevisionLine revisions={data.revisions} marks={data.revision_marks} />
          <div className="wolt-charts">
            <LineChart title="requests/s" series={data.requests} names={names} {...time} />
            <LineChart title="error rate" series={data.error_rate} names={names} format={pct} {...time} />
            {Object.entries(data.latency).map(([q, s]) => (
              <LineChart key={q} title={`latency ${q}`} series={s} names={names} format={ms} {...time} />
            ))}
            <LineChart title="shadow agreement" series={data.agreement} names={names} format={pct} {...time} />
          </div>
          <Summary data={data} />
          <div className="wolt-meta">
            source: {data.source}
            {data.checked_against ? ` (checked against the ${data.checked_against})` : ''}
          </div>
        </>
      )}
      <h3 className="wolt-section-title">Rollout timeline (automatic update service)</h3>
      {view.serviceFailing && (
        <div className="wolt-message wolt-error wolt-service-failing">
          update service failing: {view.serviceFailing}
        </div>
      )}
      {view.rollout && <RolloutControls view={view} rollout={view.rollout} />}
      {view.updatesNote && <div className="wolt-message wolt-updates-note">{view.updatesNote}</div>}
      {view.decisions && !view.decisions.length && <div className="wolt-empty">No decisions yet.</div>}
      {view.decisions && view.decisions.length > 0 && (
        <ol className="wolt-timeline">
          {view.decisions.map((d, i) => (
            <li key={i}>
              <strong>{d.action ?? 'decision'}</strong> {d.time ? new Date(d.time * 1000).toLocaleString() : ''}{' '}
              {d.reason ?? ''}
              <code>
                {JSON.stringify(
                  Object.fromEntries(Object.entries(d).filter(([k]) => !['action', 'time', 'reason'].includes(k)))
                )}
              </code>
            </li>
          ))}
        </ol>
      )}
    </div>
  );
}

const LABELS: { [command: string]: string } = {
  pause: 'Pause',
  resume: 'Resume',
  'promote-now': 'Promote now',
  abort: 'Abort',
  approve: 'Approve'
};

/** The candidate in flight, why it stands still, and a button for each command that applies now. */
function RolloutControls({ view, rollout }: { view: DeploymentView; rollout: IRollout }): JSX.Element {
  const state = rollout.outcome
    ? rollout.outcome.replace('_', ' ')
    : rollout.paused
      ? `paused — ${rollout.paused}`
      : rollout.waiting_for
        ? `waiting for approval before ${rollout.waiting_for}`
        : 'in progress';
  return (
    <div className="wolt-rollout" data-step={rollout.step} data-paused={rollout.paused ? 'true' : 'false'}>
      <span className="wolt-meta">
        version {rollout.candidate} at {rollout.step}: {state}
      </span>
      {rollout.commands.map(c => (
        <button
          key={c}
          className={`wolt-button wolt-rollout-${c}`}
          title={Snippets.steer(view.name, c)}
          onClick={() => void view.steer(c)}
        >
          {LABELS[c] ?? c}
        </button>
      ))}
    </div>
  );
}

function Summary({ data }: { data: IMonitorData }): JSX.Element | null {
  if (!data.summary.length) {
    return null;
  }
  const num = (v: unknown, f: (x: number) => string) => (typeof v === 'number' ? f(v) : '');
  return (
    <table className="wolt-summary">
      <thead>
        <tr>
          <th>variant</th>
          <th>requests</th>
          <th>share</th>
          <th>errors</th>
          <th>p50</th>
          <th>p95</th>
          <th>p99</th>
          <th>agreement</th>
        </tr>
      </thead>
      <tbody>
        {data.summary.map(s => (
          <tr key={String(s.variant)} data-variant={String(s.variant)}>
            <td>
              {String(s.variant)}
              {s.shadow ? ' (shadow)' : ''}
            </td>
            <td>{num(s.requests, v => v.toFixed(0))}</td>
            <td>{num(s.share, pct)}</td>
            <td>{num(s.error_rate, pct)}</td>
            <td>{num(s.p50, ms)}</td>
            <td>{num(s.p95, ms)}</td>
            <td>{num(s.p99, ms)}</td>
            <td>{num(s.agreement, pct)}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}
