/**
 * The commands behind the sidebar, the palette and the launcher. Each action is one call to the server API;
 * "insert snippet" puts the matching %wolt_* line in the active notebook, so the UI teaches the magics.
 */
import { JupyterFrontEnd } from '@jupyterlab/application';
import { Dialog, MainAreaWidget, Notification, showDialog } from '@jupyterlab/apputils';
import { INotebookTracker, NotebookActions } from '@jupyterlab/notebook';

import { DeployDialogBody } from './components/DeployDialog';
import { DeploymentView } from './components/DeploymentView';
import { Snippets, WoltModel } from './model';
import { CommandIDs } from './tokens';
import { woltIcon } from './icons';

export function addCommands(
  app: JupyterFrontEnd,
  model: WoltModel,
  sidebarId: string,
  notebooks: INotebookTracker | null
): void {
  const { commands, shell } = app;
  const views = new Map<string, MainAreaWidget<DeploymentView>>();

  commands.addCommand(CommandIDs.openSidebar, {
    label: 'wolt: Show Models and Deployments',
    icon: woltIcon,
    execute: () => shell.activateById(sidebarId)
  });

  commands.addCommand(CommandIDs.refresh, {
    label: 'wolt: Refresh Models and Deployments',
    execute: () => model.refresh()
  });

  commands.addCommand(CommandIDs.deploy, {
    label: args => (args.isLauncher ? 'Deploy a Model' : 'wolt: Deploy a Model…'),
    caption: 'Deploy registered model versions with A/B, shadow and canary variants',
    icon: args => (args.isPalette ? undefined : woltIcon),
    execute: async args => {
      await model.refresh();
      const settings = await model.loadSettings();
      const body = new DeployDialogBody(
        model,
        settings.targets,
        settings.default_target,
        args.model as string | undefined
      );
      const result = await showDialog({
        title: 'Deploy',
        body,
        buttons: [Dialog.cancelButton(), Dialog.okButton({ label: 'Deploy', ariaLabel: 'Deploy' })],
        focusNodeSelector: '.wolt-deploy-name'
      });
      if (!result.button.accept) {
        return;
      }
      const problem = body.problem();
      if (problem) {
        Notification.error(`Not deployed: ${problem}`);
        return;
      }
      const request = result.value as ReturnType<DeployDialogBody['getValue']>;
      const id = Notification.emit(`Deploying ${request.name}…`, 'in-progress', { autoClose: false });
      try {
        const d = await model.deploy(request);
        Notification.update({
          id,
          type: 'success',
          message: `${d.name} is ${d.status} (revision ${d.revision})`,
          autoClose: 5000,
          actions: [
            {
              label: 'Insert as %wolt_deploy',
              callback: () => void commands.execute(CommandIDs.insertSnippet, { code: Snippets.deploy(request) })
            }
          ]
        });
      } catch (error: any) {
        Notification.update({
          id,
          type: 'error',
          message: `Deploying ${request.name} failed: ${error.message}`,
          autoClose: false
        });
      }
    }
  });

  commands.addCommand(CommandIDs.openDeployment, {
    label: args => (args.name ? `wolt: Open ${args.name}` : 'wolt: Open a Deployment…'),
    execute: async args => {
      let name = args.name as string | undefined;
      if (!name) {
        await model.refresh();
        const { value } = await (
          await import('@jupyterlab/apputils')
        ).InputDialog.getItem({
          title: 'Open deployment',
          items: model.deployments.map(d => d.name)
        });
        name = value ?? undefined;
      }
      if (!name) {
        return;
      }
      let widget = views.get(name);
      if (!widget || widget.isDisposed) {
        widget = new MainAreaWidget({ content: new DeploymentView(model, name) });
        widget.id = `wolt-deployment-view-${name}`;
        widget.title.label = `wolt: ${name}`;
        widget.title.icon = woltIcon;
        widget.title.closable = true;
        views.set(name, widget);
      }
      if (!widget.isAttached) {
        shell.add(widget, 'main');
      }
      shell.activateById(widget.id);
    }
  });

  commands.addCommand(CommandIDs.insertSnippet, {
    label: args => (args.code ? `Insert ${String(args.code).split('\n')[0]}` : 'wolt: Insert a %wolt_* snippet'),
    isEnabled: () => !!notebooks?.currentWidget,
    execute: args => {
      const panel = notebooks?.currentWidget;
      const code = (args.code as string | undefined) ?? '%load_ext wolt_jupyter';
      if (!panel) {
        Notification.warning(`Open a notebook to insert: ${code}`);
        return;
      }
      shell.activateById(panel.id);
      const notebook = panel.content;
      NotebookActions.insertBelow(notebook);
      const cell = notebook.activeCell;
      if (cell) {
        cell.model.sharedModel.setSource(code);
      }
    }
  });
}
