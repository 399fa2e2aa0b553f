"""ipywidgets panels for the notebook: live monitoring (``monitor``) and the registry + deployments panel
(``%wolt_panel``) for front ends without the lab extension. The core never imports this package."""
