"""The ``jupyter_server`` extension: a REST API under ``/wolt-jupyter/api/`` over the same core as the magics.

The lab extension (``labextension/``) talks only to these routes; nothing here runs in a kernel. Enabled on
install through ``jupyter-config/jupyter_server_config.d/wolt_jupyter.json``; found through
``wolt_jupyter._jupyter_server_extension_points``.
"""

from __future__ import annotations

from typing import Any

API_PREFIX = "wolt-jupyter/api"


def _load_jupyter_server_extension(server_app: Any) -> None:
    """Register the handlers on the server's tornado application (imports nothing heavy)."""
    from jupyter_server.utils import url_path_join

    from wolt_jupyter.server.handlers import ROUTES

    web_app = server_app.web_app
    base_url = web_app.settings["base_url"]
    web_app.add_handlers(
        ".*$", [(url_path_join(base_url, API_PREFIX, pattern), handler) for pattern, handler in ROUTES]
    )
    server_app.log.info("wolt-jupyter: REST API at %s", url_path_join(base_url, API_PREFIX))
