/**
 * The deploy dialog: a version per variant, weights with sliders that keep the sum at 100, shadow toggles,
 * sticky key, target, and a dry-run preview of what would be applied. Its value is the deploy request.
 */
import { ReactWidget } from '@jupyterlab/ui-components';
import React, { useState } from 'react';

import { Snippets, WoltModel, rebalance } from '../model';
import { IDeployRequest, IRegisteredModel } from '../tokens';
import { WeightSliders } from './TrafficDialog';

interface IVariantRow {
  name: string;
  model: string; // registered model name
  version: string; // a version number, or @alias
  shadow: boolean;
}

interface IFormState {
  name: string;
  rows: IVariantRow[];
  weights: number[]; // of the live rows, in order
  stickyKey: string;
  target: string;
  namespace: string;
}

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

/** ``models:/eta/3`` or ``models:/eta@champion`` → (model, version-or-@alias). */
function parseUri(uri: string | undefined): { model: string; version: string } | null {
  const m = /^models:\/([^/@]+)(?:\/(\w+)|@([\w-]+))$/.exec(uri ?? '');
  return m ? { model: m[1], version: m[2] ?? `@${m[3]}` } : null;
}

function uriOf(row: IVariantRow): string {
  return row.version.startsWith('@') ? `models:/${row.model}${row.version}` : `models:/${row.model}/${row.version}`;
}

function nextName(rows: IVariantRow[], shadow: boolean): string {
  const base = shadow ? 'shadow' : rows.length ? 'challenger' : 'main';
  const taken = new Set(rows.map(r => r.name));
  let name = base;
  for (let n = 2; taken.has(name); n++) {
    name = `${base}-${n}`;
  }
  return name;
}

export function requestOf(state: IFormState, dryRun = false): IDeployRequest {
  let live = 0;
  const variants = state.rows.map(r =>
    r.shadow
      ? { name: r.name, model: uriOf(r), shadow: true }
      : { name: r.name, model: uriOf(r), traffic: state.weights[live++] }
  );
  const request: IDeployRequest = {
    name: state.name,
    spec: { name: state.name, variants, routing: { sticky_key: state.stickyKey || null } },
    target: state.target,
    dry_run: dryRun
  };
  if (state.target !== 'local' && state.namespace) {
    request.namespace = state.namespace;
  }
  return request;
}

export class DeployDialogBody extends ReactWidget {
  constructor(
    readonly model: WoltModel,
    targets: string[],
    defaultTarget: string,
    initialUri?: string
  ) {
    super();
    this.addClass('wolt-dialog');
    this.addClass('wolt-deploy-dialog');
    this._targets = targets;
    const first = parseUri(initialUri) ?? this._defaultVersion(model.models[0]);
    this._state = {
      name: first ? first.model.toLowerCase().replace(/[^a-z0-9-]/g, '-') : '',
      rows: first ? [{ name: 'main', ...first, shadow: false }] : [],
      weights: first ? [100] : [],
      stickyKey: '',
      target: defaultTarget,
      namespace: ''
    };
  }

  getValue(): IDeployRequest {
    return requestOf(this._state);
  }

  /** A problem that makes the request pointless to send, or null. */
  problem(): string | null {
    const s = this._state;
    if (!DNS_LABEL.test(s.name)) {
      return 'the name must be a DNS label: lowercase letters, digits and "-"';
    }
    if (!s.rows.some(r => !r.shadow)) {
      return 'add at least one live variant';
    }
    return null;
  }

  private _defaultVersion(m: IRegisteredModel | undefined): { model: string; version: string } | null {
    if (!m || !m.versions.length) {
      return null;
    }
    return { model: m.name, version: m.aliases.champion ? '@champion' : m.versions[0].version };
  }

  render(): JSX.Element {
    const Form = () => {
      const [state, setState] = useState(this._state);
      const [preview, setPreview] = useState<string | null>(null);
      const update = (next: IFormState) => {
        this._state = next;
        setState(next);
      };
      const liveIndex = (i: number) => state.rows.slice(0, i).filter(r => !r.shadow).length;
      const setRow = (i: number, change: Partial<IVariantRow>) => {
        const rows = state.rows.map((r, j) => (j === i ? { ...r, ...change } : r));
        let weights = state.weights;
        if (change.shadow !== undefined && change.shadow !== state.rows[i].shadow) {
          const k = liveIndex(i);
          weights = change.shadow
            ? state.weights.filter((_, j) => j !== k)
            : [...state.weights.slice(0, k), 0, ...state.weights.slice(k)];
          weights = weights.length
            ? rebalance(weights, 0, weights[0] + (100 - weights.reduce((a, b) => a + b, 0)))
            : [];
        }
        update({ ...state, rows, weights });
      };
      const addRow = (shadow: boolean) => {
        const base = state.rows[0] ?? this._defaultVersion(this.model.models[0]) ?? { model: '', version: '' };
        const row = { name: nextName(state.rows, shadow), model: base.model, version: base.version, shadow };
        const weights = shadow ? state.weights : state.weights.length ? [...state.weights, 0] : [100];
        update({ ...state, rows: [...state.rows, row], weights });
      };
      const removeRow = (i: number) => {
        const rows = state.rows.filter((_, j) => j !== i);
        let weights = state.rows[i].shadow ? state.weights : state.weights.filter((_, j) => j !== liveIndex(i));
        if (weights.length) {
          weights = rebalance(weights, 0, weights[0] + (100 - weights.reduce((a, b) => a + b, 0)));
        }
        update({ ...state, rows, weights });
      };
      const runPreview = async () => {
        setPreview('rendering…');
        try {
          const result = await this.model.deploy(requestOf(state, true));
          const manifests = result.manifests_yaml ?? JSON.stringify(result.manifests ?? [], null, 2);
          setPreview(result.diff ? `${result.diff}\n---\n${manifests}` : manifests);
        } catch (error: any) {
          setPreview(`error: ${error.message}`);
        }
      };
      const versionsOf = (name: string) => this.model.models.find(m => m.name === name);
      const live = state.rows.filter(r => !r.shadow);
      return (
        <div className="wolt-form">
          <label className="wolt-field">
            <span>Name</span>
            <input
              className="wolt-deploy-name"
              value={state.name}
              onChange={e => update({ ...state, name: e.target.value })}
            />
          </label>
          <table className="wolt-variants">
            <thead>
              <tr>
                <th>variant</th>
                <th>model</th>
                <th>version</th>
                <th>shadow</th>
                <th />
              </tr>
            </thead>
            <tbody>
              {state.rows.map((r, i) => {
                const m = versionsOf(r.model);
                return (
                  <tr key={i} className="wolt-variant-row" data-row={i}>
                    <td>
                      <input
                        className="wolt-variant-name"
                        value={r.name}
                        size={10}
                        onChange={e => setRow(i, { name: e.target.value })}
                      />
                    </td>
                    <td>
                      <select
                        className="wolt-variant-model"
                        value={r.model}
                        onChange={e =>
                          setRow(i, {
                            model: e.target.value,
                            version: this._defaultVersion(versionsOf(e.target.value))?.version ?? ''
                          })
                        }
                      >
                        {this.model.models.map(mm => (
                          <option key={mm.name} value={mm.name}>
                            {mm.name}
                          </option>
                        ))}
                      </select>
                    </td>
                    <td>
                      <select
                        className="wolt-variant-version"
                        value={r.version}
                        onChange={e => setRow(i, { version: e.target.value })}
                      >
                        {m &&
                          Object.keys(m.aliases).map(a => (
                            <option key={`@${a}`} value={`@${a}`}>
                              @{a} (v{m.aliases[a]})
                            </option>
                          ))}
                        {m?.versions.map(v => (
                          <option key={v.version} value={v.version}>
                            v{v.version}
                          </option>
                        ))}
                      </select>
                    </td>
                    <td>
                      <input
                        type="checkbox"
                        className="wolt-variant-shadow"
                        checked={r.shadow}
                        onChange={e => setRow(i, { shadow: e.target.checked })}
                      />
                    </td>
                    <td>
                      <button className="wolt-link" onClick={() => removeRow(i)} title="Remove this variant">
                        ✕
                      </button>
                    </td>
                  </tr>
                );
              })}
            </tbody>
          </table>
          <div className="wolt-row">
            <button className="wolt-button wolt-add-variant" onClick={() => addRow(false)}>
              + variant
            </button>
            <button className="wolt-button wolt-add-shadow" onClick={() => addRow(true)}>
              + shadow
            </button>
          </div>
          {live.length > 1 && (
            <WeightSliders
              names={live.map(r => r.name)}
              weights={state.weights}
              onChange={weights => update({ ...state, weights })}
            />
          )}
          <label className="wolt-field">
            <span>Sticky key</span>
            <input
              className="wolt-sticky-key"
              placeholder="e.g. user_id (optional)"
              value={state.stickyKey}
              onChange={e => update({ ...state, stickyKey: e.target.value })}
            />
          </label>
          <label className="wolt-field">
            <span>Target</span>
            <select
              className="wolt-target"
              value={state.target}
              onChange={e => update({ ...state, target: e.target.value })}
            >
              {this._targets.map(t => (
                <option key={t} value={t}>
                  {t}
                </option>
              ))}
            </select>
          </label>
          {state.target !== 'local' && (
            <label className="wolt-field">
              <span>Namespace</span>
              <input
                className="wolt-namespace"
                placeholder="default from settings"
                value={state.namespace}
                onChange={e => update({ ...state, namespace: e.target.value })}
              />
            </label>
          )}
          <div className="wolt-row">
            <button className="wolt-button wolt-preview-button" onClick={() => void runPreview()}>
              Preview (dry run)
            </button>
            <code className="wolt-snippet-preview">{state.rows.length ? requestSnippet(state) : ''}</code>
          </div>
          {preview && <pre className="wolt-preview">{preview}</pre>}
        </div>
      );
    };
    return <Form />;
  }

  private _state: IFormState;
  private _targets: string[];
}

function requestSnippet(state: IFormState): string {
  return Snippets.deploy(requestOf(state));
}
