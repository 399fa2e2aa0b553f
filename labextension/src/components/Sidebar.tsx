/**
 * The left sidebar: the registry (models → versions, aliases as badges) and the deployments (status,
 * revision, restarts, a traffic bar) with their actions. Polls only while visible.
 */
import { Dialog, showDialog } from '@jupyterlab/apputils';
import { ReactWidget, UseSignal } from '@jupyterlab/ui-components';
import { CommandRegistry } from '@lumino/commands';
import { Message } from '@lumino/messaging';
import React, { useState } from 'react';

import { Snippets, WoltModel } from '../model';
import { CommandIDs, IDeployment, IRegisteredModel } from '../tokens';
import { TrafficDialogBody } from './TrafficDialog';
import { TrafficBar } from './TrafficBar';

export class WoltSidebar extends ReactWidget {
  constructor(
    readonly model: WoltModel,
    readonly commands: CommandRegistry
  ) {
    super();
    this.id = 'wolt-sidebar';
    this.addClass('wolt-sidebar');
  }

  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    this.model.startPolling();
  }

  protected onAfterHide(msg: Message): void {
    super.onAfterHide(msg);
    this.model.stopPolling();
  }

  protected onAfterAttach(msg: Message): void {
    super.onAfterAttach(msg);
    if (this.isVisible) {
      this.model.startPolling();
    }
  }

  protected onBeforeDetach(msg: Message): void {
    this.model.stopPolling();
    super.onBeforeDetach(msg);
  }

  render(): JSX.Element {
    return (
      <UseSignal signal={this.model.changed}>
        {() => <SidebarView model={this.model} commands={this.commands} />}
      </UseSignal>
    );
  }
}

function SidebarView({ model, commands }: { model: WoltModel; commands: CommandRegistry }): JSX.Element {
  return (
    <div className="wolt-sidebar-content">
      <div className="wolt-sidebar-toolbar">
        <input
          className="wolt-filter"
          type="search"
          placeholder="Filter models and deployments"
          value={model.filter}
          onChange={e => model.setFilter(e.target.value)}
        />
        <button className="wolt-button" title="Refresh" onClick={() => void model.refresh()}>
          ↻
        </button>
        <button className="wolt-button wolt-button-primary" onClick={() => void commands.execute(CommandIDs.deploy)}>
          Deploy…
        </button>
      </div>
      {model.error && <div className="wolt-error">{model.error}</div>}
      <h3 className="wolt-section-title">Deployments</h3>
      <ul className="wolt-deployments">
        {model.visibleDeployments.map(d => (
          <DeploymentItem key={d.name} deployment={d} model={model} commands={commands} />
        ))}
        {!model.visibleDeployments.length && <li className="wolt-empty">No deployments yet.</li>}
      </ul>
      <h3 className="wolt-section-title">Registry</h3>
      <ul className="wolt-models">
        {model.visibleModels.map(m => (
          <ModelItem key={m.name} model={m} commands={commands} />
        ))}
        {!model.visibleModels.length && <li className="wolt-empty">No registered models.</li>}
      </ul>
    </div>
  );
}

function ModelItem({ model, commands }: { model: IRegisteredModel; commands: CommandRegistry }): JSX.Element {
  const [open, setOpen] = useState(true);
  return (
    <li className="wolt-model" data-model={model.name}>
      <div className="wolt-model-name" onClick={() => setOpen(!open)}>
        <span className="wolt-caret">{open ? '▾' : '▸'}</span>
        {model.name}
        <span className="wolt-count">{model.versions.length} versions</span>
      </div>
      {open && (
        <ul className="wolt-versions">
          {model.versions.map(v => (
            <li key={v.version} className="wolt-version" data-version={v.version}>
              <span className="wolt-version-number">v{v.version}</span>
              {v.aliases.map(a => (
                <span key={a} className="wolt-badge" title={`models:/${model.name}@${a}`}>
                  @{a}
                </span>
              ))}
              <span className="wolt-version-actions">
                <button
                  className="wolt-link"
                  title="Deploy this version"
                  onClick={() => void commands.execute(CommandIDs.deploy, { model: v.uri })}
                >
                  deploy
                </button>
                <button
                  className="wolt-link"
                  title="Insert code that loads this version into the notebook"
                  onClick={() => void commands.execute(CommandIDs.insertSnippet, { code: Snippets.load(v.uri) })}
                >
                  load
                </button>
              </span>
            </li>
          ))}
        </ul>
      )}
    </li>
  );
}

async function confirm(title: string, body: string, label: string, warn = false): Promise<boolean> {
  const result = await showDialog({
    title,
    body,
    buttons: [Dialog.cancelButton(), (warn ? Dialog.warnButton : Dialog.okButton)({ label })]
  });
  return result.button.accept;
}

async function act(model: WoltModel, action: () => Promise<unknown>): Promise<void> {
  try {
    await action();
  } catch (error: any) {
    await showDialog({ title: 'wolt-jupyter', body: error.message, buttons: [Dialog.okButton()] });
    await model.refresh();
  }
}

function DeploymentItem(props: { deployment: IDeployment; model: WoltModel; commands: CommandRegistry }): JSX.Element {
  const { deployment: d, model, commands } = props;
  const live = d.variants.filter(v => !v.shadow);
  const snippet = (code: string) => void commands.execute(CommandIDs.insertSnippet, { code });

  const changeTraffic = async () => {
    const body = new TrafficDialogBody(live);
    const result = await showDialog({
      title: `Traffic of ${d.name}`,
      body,
      buttons: [Dialog.cancelButton(), Dialog.okButton({ label: 'Apply' })]
    });
    if (result.button.accept && result.value) {
      const weights = result.value;
      await act(model, () => model.traffic(d.name, weights));
    }
  };
  const promote = async (variant: string) => {
    if (
      await confirm(
        `Promote ${variant}?`,
        `${variant} takes all the traffic of ${d.name}; other live variants are dropped, shadows stay.`,
        'Promote'
      )
    ) {
      await act(model, () => model.promote(d.name, variant));
    }
  };
  const rollback = async () => {
    if (
      await confirm(
        `Roll back ${d.name}?`,
        `Revision ${d.revision} is replaced by the one before it (as a new revision).`,
        'Roll back'
      )
    ) {
      await act(model, () => model.rollback(d.name));
    }
  };
  const undeploy = async () => {
    if (
      await confirm(
        `Undeploy ${d.name}?`,
        'The endpoint stops; its response log and revisions stay readable.',
        'Undeploy',
        true
      )
    ) {
      await act(model, () => model.undeploy(d.name));
    }
  };

  return (
    <li className="wolt-deployment" data-deployment={d.name}>
      <div className="wolt-deployment-head">
        <span className={`wolt-status wolt-status-${d.status.split(':')[0]}`}>{d.status}</span>
        <button
          className="wolt-link wolt-deployment-name"
          onClick={() => void commands.execute(CommandIDs.openDeployment, { name: d.name })}
        >
          {d.name}
        </button>
        <span className="wolt-meta">
          {d.target} · rev {d.revision ?? '–'}
          {d.restarts !== undefined && d.restarts !== null ? ` · ${d.restarts} restarts` : ''}
        </span>
      </div>
      {d.message && <div className="wolt-message">{d.message}</div>}
      <TrafficBar variants={d.variants} />
      <div className="wolt-actions">
        <button className="wolt-button" onClick={() => void changeTraffic()} disabled={live.length < 2}>
          Traffic…
        </button>
        {live.length > 1 &&
          live.slice(1).map(v => (
            <button key={v.name} className="wolt-button" onClick={() => void promote(v.name)}>
              Promote {v.name}
            </button>
          ))}
        <button className="wolt-button" onClick={() => void rollback()} disabled={(d.revision ?? 0) < 2}>
          Roll back
        </button>
        <button className="wolt-button wolt-button-danger" onClick={() => void undeploy()}>
          Undeploy
        </button>
        <button
          className="wolt-link"
          title="Insert the %wolt_monitor line into the notebook"
          onClick={() => snippet(Snippets.monitor(d.name))}
        >
          %monitor
        </button>
      </div>
    </li>
  );
}
