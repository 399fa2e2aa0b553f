/**
 * Wires the plugin: the sidebar, commands, palette, launcher and settings. Nothing else lives here.
 */
import { ILayoutRestorer, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette } from '@jupyterlab/apputils';
import { ILauncher } from '@jupyterlab/launcher';
import { INotebookTracker } from '@jupyterlab/notebook';
import { ISettingRegistry } from '@jupyterlab/settingregistry';

import { addCommands } from './commands';
import { WoltSidebar } from './components/Sidebar';
import { woltIcon } from './icons';
import { WoltModel } from './model';
import { CommandIDs, PLUGIN_ID } from './tokens';

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'Models, deployments and rollouts of wolt-jupyter in the JupyterLab sidebar.',
  autoStart: true,
  optional: [ICommandPalette, ILauncher, INotebookTracker, ISettingRegistry, ILayoutRestorer],
  activate: (
    app: JupyterFrontEnd,
    palette: ICommandPalette | null,
    launcher: ILauncher | null,
    notebooks: INotebookTracker | null,
    settingRegistry: ISettingRegistry | null,
    restorer: ILayoutRestorer | null
  ) => {
    const model = new WoltModel();
    const sidebar = new WoltSidebar(model, app.commands);
    sidebar.title.icon = woltIcon;
    sidebar.title.caption = 'wolt: models and deployments';
    app.shell.add(sidebar, 'left', { rank: 600 });
    restorer?.add(sidebar, sidebar.id);

    addCommands(app, model, sidebar.id, notebooks);
    for (const command of [
      CommandIDs.openSidebar,
      CommandIDs.deploy,
      CommandIDs.refresh,
      CommandIDs.openDeployment,
      CommandIDs.insertSnippet
    ]) {
      palette?.addItem({ command, category: 'wolt-jupyter' });
    }
    launcher?.add({ command: CommandIDs.deploy, category: 'Other', rank: 10, args: { isLauncher: true } });

    if (settingRegistry) {
      void settingRegistry.load(PLUGIN_ID).then(settings => {
        const apply = () => {
          model.refreshInterval = settings.get('refreshInterval').composite as number;
          if (model.polling) {
            model.startPolling();
          }
        };
        apply();
        settings.changed.connect(apply);
      });
    }
  }
};

export default plugin;
