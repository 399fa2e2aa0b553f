/**
 * The sidebar's state: registry and deployments from the server API, refreshed by polling while someone
 * looks at it, and the actions the UI offers (each one a call to the same core as the magics).
 */
import { ISignal, Signal } from '@lumino/signaling';

import { json, requestAPI } from './request';
import { IDeployRequest, IDeployment, IMonitorData, IRegisteredModel, ISettings, ISteered, IUpdates } from './tokens';

export class WoltModel {
  models: IRegisteredModel[] = [];
  deployments: IDeployment[] = [];
  settings: ISettings | null = null;
  error: string | null = null;
  loading = false;
  filter = '';
  refreshInterval = 10;

  get changed(): ISignal<WoltModel, void> {
    return this._changed;
  }

  async refresh(): Promise<void> {
    this.loading = true;
    this._changed.emit();
    const errors: string[] = [];
    const [models, deployments] = await Promise.all([
      requestAPI<{ models: IRegisteredModel[] }>('models').catch(e => {
        errors.push(`registry: ${e.message}`);
        return null;
      }),
      requestAPI<{ deployments: IDeployment[] }>('deployments').catch(e => {
        errors.push(`deployments: ${e.message}`);
        return null;
      })
    ]);
    if (models) {
      this.models = models.models;
    }
    if (deployments) {
      this.deployments = deployments.deployments;
    }
    this.error = errors.length ? errors.join('; ') : null;
    this.loading = false;
    this._changed.emit();
  }

  async loadSettings(): Promise<ISettings> {
    if (!this.settings) {
      this.settings = await requestAPI<ISettings>('settings');
    }
    return this.settings;
  }

  /** Poll while visible: the caller starts it when the panel is shown and stops it when hidden. */
  startPolling(): void {
    this.stopPolling();
    void this.refresh();
    if (this.refreshInterval > 0) {
      this._timer = window.setInterval(() => void this.refresh(), this.refreshInterval * 1000);
    }
  }

  stopPolling(): void {
    if (this._timer !== null) {
      window.clearInterval(this._timer);
      this._timer = null;
    }
  }

  get polling(): boolean {
    return this._timer !== null;
  }

  setFilter(text: string): void {
    this.filter = text;
    this._changed.emit();
  }

  /** Models whose name (or a version's alias) contains the filter text. */
  get visibleModels(): IRegisteredModel[] {
    const f = this.filter.trim().toLowerCase();
    if (!f) {
      return this.models;
    }
    return this.models.filter(
      m => m.name.toLowerCase().includes(f) || Object.keys(m.aliases).some(a => a.toLowerCase().includes(f))
    );
  }

  get visibleDeployments(): IDeployment[] {
    const f = this.filter.trim().toLowerCase();
    return f
      ? this.deployments.filter(d => d.name.includes(f) || d.variants.some(v => v.model.includes(f)))
      : this.deployments;
  }

  // -- actions -------------------------------------------------------------------------------------------
  async deploy(request: IDeployRequest): Promise<IDeployment> {
    const result = await requestAPI<IDeployment>('deployments', json('POST', request));
    if (!request.dry_run) {
      await this.refresh();
    }
    return result;
  }

  async traffic(name: string, weights: { [variant: string]: number }): Promise<IDeployment> {
    return this._after(requestAPI<IDeployment>(`deployments/${name}/traffic`, json('PUT', { weights })));
  }

  async promote(name: string, variant: string): Promise<IDeployment> {
    return this._after(requestAPI<IDeployment>(`deployments/${name}/promote`, json('POST', { variant })));
  }

  async rollback(name: string): Promise<IDeployment> {
    return this._after(requestAPI<IDeployment>(`deployments/${name}/rollback`, json('POST')));
  }

  async undeploy(name: string): Promise<void> {
    await this._after(requestAPI<void>(`deployments/${name}`, json('DELETE')));
  }

  /** One refresh of a deployment's series; ``revision`` as the server takes it ('' or absent: since the last deploy). */
  metrics(name: string, since: string, step: string, revision = ''): Promise<IMonitorData> {
    const query = new URLSearchParams({ since, step });
    if (revision) {
      query.set('revision', revision);
    }
    return requestAPI<IMonitorData>(`deployments/${name}/metrics?${query}`);
  }

  updates(name: string): Promise<IUpdates> {
    return requestAPI(`deployments/${name}/updates`);
  }

  /** Pause, resume, promote-now, abort or approve the rollout of the update service. */
  steer(name: string, command: string): Promise<ISteered> {
    return this._after(requestAPI<ISteered>(`deployments/${name}/rollout`, json('POST', { command })));
  }

  private async _after<T>(call: Promise<T>): Promise<T> {
    const result = await call;
    await this.refresh();
    return result;
  }

  private _changed = new Signal<WoltModel, void>(this);
  private _timer: number | null = null;
}

/**
 * Set weight ``index`` to ``value`` and spread the rest over the others in proportion to what they had,
 * so the weights always sum to 100 (largest remainders get the rounding).
 */
export function rebalance(weights: number[], index: number, value: number): number[] {
  const v = Math.max(0, Math.min(100, Math.round(value)));
  if (weights.length === 1) {
    return [100];
  }
  const others = weights.map((w, i) => (i === index ? 0 : Math.max(0, w)));
  const otherSum = others.reduce((a, b) => a + b, 0);
  const rest = 100 - v;
  const shares = others.map((w, i) =>
    i === index ? 0 : otherSum > 0 ? (w / otherSum) * rest : rest / (weights.length - 1)
  );
  const out = shares.map(s => Math.floor(s));
  out[index] = v;
  let missing = 100 - out.reduce((a, b) => a + b, 0);
  const order = shares
    .map((s, i) => ({ i, frac: s - Math.floor(s) }))
    .filter(x => x.i !== index)
    .sort((a, b) => b.frac - a.frac);
  for (let k = 0; missing > 0 && order.length; k = (k + 1) % order.length, missing--) {
    out[order[k].i] += 1;
  }
  return out;
}

/** The ``%wolt_*`` line that does what a UI action does: the UI teaches the magics. */
export namespace Snippets {
  export function deploy(request: IDeployRequest): string {
    const [main, ...rest] = request.spec.variants;
    const mainUri = main.name === 'main' ? main.model : `${main.name}:${main.model}`;
    const parts = [`%wolt_deploy ${request.name} --model ${mainUri}`];
    for (const v of rest) {
      parts.push(v.shadow ? `--shadow ${v.name}:${v.model}` : `--ab ${v.name}:${v.model}=${v.traffic}`);
    }
    if (request.spec.routing?.sticky_key) {
      parts.push(`--sticky-key ${request.spec.routing.sticky_key}`);
    }
    if (request.target && request.target !== 'local') {
      parts.push(`--target ${request.target}`);
    }
    if (request.dry_run) {
      parts.push('--dry-run');
    }
    return parts.join(' ');
  }

  export function traffic(name: string, weights: { [variant: string]: number }): string {
    return `%wolt_traffic ${name} ${Object.entries(weights)
      .map(([k, v]) => `${k}=${v}`)
      .join(' ')}`;
  }

  export const promote = (name: string, variant: string): string => `%wolt_promote ${name} ${variant}`;
  export const rollback = (name: string): string => `%wolt_rollback ${name}`;
  export const undeploy = (name: string): string => `%wolt_undeploy ${name}`;
  export const monitor = (name: string): string => `%wolt_monitor ${name} --since 30m`;
  export const steer = (name: string, command: string): string => `%wolt_autoupdate ${name} --${command}`;
  export const load = (uri: string): string => `import mlflow\nmodel = mlflow.pyfunc.load_model("${uri}")`;
}
