"""``%wolt_panel``: the registry, the deployments and a deploy form as one ipywidgets panel.

For front ends without the lab extension (classic Notebook, VS Code): the same actions as the JupyterLab
sidebar — deploy with an A/B challenger and a shadow, change traffic, promote, roll back, undeploy — each one
call to :mod:`wolt_jupyter.deployments`, run in the kernel. Destructive actions ask for a second click.
"""

from __future__ import annotations

import html
from typing import Any

from wolt_jupyter.errors import WoltError

NONE = "(none)"


class WoltPanel:
    """Display it (it is a widget). ``name`` narrows the panel to models and deployments containing it."""

    def __init__(self, name: str | None = None) -> None:
        import ipywidgets as w

        self.filter = name or ""
        self.models: list[dict[str, Any]] = []
        self.deployments: list[Any] = []
        self.last_result: Any = None
        self.message = w.HTML()
        self.message.add_class("wolt-panel-message")
        self.registry_box = w.HTML()
        self.registry_box.add_class("wolt-panel-registry")
        self.deployments_box = w.VBox()
        self.deployments_box.add_class("wolt-panel-deployments")
        refresh = w.Button(description="refresh", icon="refresh", layout={"width": "100px"})
        refresh.on_click(lambda _b: self.refresh())
        self._build_form()
        self.widget = w.VBox(
            [
                w.HBox([w.HTML("<b>wolt-jupyter</b>"), refresh]),
                self.message,
                w.HTML("<h4>Deployments</h4>"),
                self.deployments_box,
                w.HTML("<h4>Registry</h4>"),
                self.registry_box,
                w.HTML("<h4>Deploy</h4>"),
                self.form,
            ]
        )
        self.widget.add_class("wolt-panel")
        self.refresh()

    # -- deploy form ----------------------------------------------------------------------------------------
    def _build_form(self) -> None:
        import ipywidgets as w

        from wolt_jupyter.config import TARGETS, settings

        self.name_input = w.Text(description="name", placeholder="e.g. eta")
        self.main_model = w.Dropdown(description="model", options=[])
        self.challenger = w.Dropdown(description="A/B", options=[NONE])
        self.challenger_weight = w.IntSlider(description="A/B %", value=10, min=1, max=99)
        self.shadow = w.Dropdown(description="shadow", options=[NONE])
        self.sticky_key = w.Text(description="sticky key", placeholder="optional, e.g. user_id")
        self.target = w.Dropdown(description="target", options=list(TARGETS), value=settings().default_target)
        self.dry_run = w.Checkbox(description="dry run", value=False)
        self.deploy_button = w.Button(description="deploy", button_style="primary", icon="rocket")
        self.deploy_button.add_class("wolt-panel-deploy")
        self.deploy_button.on_click(lambda _b: self.deploy())
        self.output = w.Output()
        self.form = w.VBox(
            [
                self.name_input,
                self.main_model,
                w.HBox([self.challenger, self.challenger_weight]),
                self.shadow,
                self.sticky_key,
                w.HBox([self.target, self.dry_run, self.deploy_button]),
                self.output,
            ]
        )

    def deploy(self) -> Any:
        """Deploy what the form says; the result card (or the one-line error) is shown under the form."""
        from wolt_jupyter import deployments

        ab = (
            []
            if self.challenger.value == NONE
            else [f"{self.challenger.value}={self.challenger_weight.value}"]
        )
        shadow = [] if self.shadow.value == NONE else [self.shadow.value]
        self.say(f"deploying {self.name_input.value}…")
        ok, result = self._run(
            deployments.deploy,
            self.name_input.value.strip(),
            self.main_model.value,
            ab=ab,
            shadow=shadow,
            sticky_key=self.sticky_key.value.strip() or None,
            target=self.target.value,
            dry_run=self.dry_run.value,
        )
        if ok:
            self.output.clear_output()
            with self.output:
                from IPython.display import display

                display(result)
            self.refresh(keep_message=False)
        return result

    # -- data -----------------------------------------------------------------------------------------------
    def refresh(self, keep_message: bool = True) -> None:
        from wolt_jupyter import deployments, registry
        from wolt_jupyter.config import settings
        from wolt_jupyter.revisions import RevisionStore

        problems = []
        try:
            self.models = [m for m in registry.grouped_models(registry.models()) if self.filter in m["name"]]
        except WoltError as exc:
            problems.append(f"registry: {exc}")
        self.deployments = []
        for name in RevisionStore(settings().home).names():
            if self.filter in name:
                try:
                    self.deployments.append(deployments.get(name))
                except WoltError as exc:
                    problems.append(f"{name}: {exc}")
        uris = [v["uri"] for m in self.models for v in m["versions"]]
        uris += [f"models:/{m['name']}@{a}" for m in self.models for a in sorted(m["aliases"])]
        chosen = self.main_model.value
        self.main_model.options = uris
        self.main_model.value = chosen if chosen in uris else (uris[0] if uris else None)
        self.challenger.options = [NONE, *uris]
        self.shadow.options = [NONE, *uris]
        self.registry_box.value = _registry_html(self.models)
        self.deployments_box.children = [self._deployment_row(d) for d in self.deployments] or [
            _html("<i>no deployments yet</i>")
        ]
        if problems:
            self.say("; ".join(problems), error=True)
        elif not keep_message:
            self.say("")

    def _deployment_row(self, d: Any) -> Any:
        import ipywidgets as w

        from wolt_jupyter import deployments

        live = [v["name"] for v in d.variants if not v["shadow"]]
        info = _html(
            f"<b>{html.escape(d.name)}</b> · {html.escape(d.status)} · {d.target} · revision {d.revision}<br>"
            + "<br>".join(
                html.escape(
                    f"{v['name']}: {'shadow' if v['shadow'] else str(v['traffic']) + '%'}  {v['model']}"
                )
                for v in d.variants
            )
        )
        weights = w.Text(
            description="traffic",
            value=" ".join(f"{v['name']}={v['traffic']}" for v in d.variants if not v["shadow"]),
        )
        apply = w.Button(description="apply", layout={"width": "70px"})
        apply.on_click(lambda _b: self._act(deployments.traffic, d.name, _weights(weights.value)))
        promote = w.Dropdown(options=[NONE, *live[1:]], description="promote", layout={"width": "220px"})

        def on_promote(ch: dict[str, Any]) -> None:
            if ch["new"] != NONE:
                self._confirm(f"promote {ch['new']} in {d.name}", deployments.promote, d.name, ch["new"])

        promote.observe(on_promote, names="value")
        rollback = w.Button(description="roll back", disabled=(d.revision or 0) < 2)
        rollback.on_click(lambda _b: self._confirm(f"roll back {d.name}", deployments.rollback, d.name))
        undeploy = w.Button(description="undeploy", button_style="danger")
        undeploy.add_class("wolt-panel-undeploy")
        undeploy.on_click(lambda _b: self._confirm(f"undeploy {d.name}", deployments.undeploy, d.name))
        row = w.VBox([info, w.HBox([weights, apply, promote, rollback, undeploy])])
        row.add_class("wolt-panel-deployment")
        return row

    # -- actions --------------------------------------------------------------------------------------------
    def _confirm(self, what: str, func: Any, *args: Any) -> None:
        """A second click on "yes" does it; anything else leaves it undone."""
        import ipywidgets as w

        yes = w.Button(description=f"yes, {what}", button_style="warning", layout={"width": "auto"})
        no = w.Button(description="cancel")
        yes.add_class("wolt-panel-confirm")
        self.confirm_box = w.HBox([yes, no])
        yes.on_click(lambda _b: self._act(func, *args))
        no.on_click(lambda _b: self.refresh(keep_message=False))
        self.deployments_box.children = [*self.deployments_box.children, self.confirm_box]

    def _act(self, func: Any, *args: Any) -> None:
        ok, _ = self._run(func, *args)
        self.refresh(keep_message=True)
        if ok:
            self.say(f"done: {func.__name__} {' '.join(map(str, args))}")

    def _run(self, func: Any, *args: Any, **kwargs: Any) -> tuple[bool, Any]:
        """Call the core; a domain error becomes the panel's message (one line), never a traceback."""
        try:
            result = func(*args, **kwargs)
        except WoltError as exc:
            self.say(str(exc), error=True)
            return False, None
        self.last_result = result
        return True, result

    def say(self, text: str, error: bool = False) -> None:
        style = "color: var(--jp-error-color1, #c62828)" if error else ""
        self.message.value = f'<span style="{style}">{html.escape(text)}</span>' if text else ""

    # -- display --------------------------------------------------------------------------------------------
    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None, **kwargs: Any) -> dict[str, Any]:
        bundle = dict(self.widget._repr_mimebundle_(**kwargs) or {})
        bundle["text/plain"] = repr(self)
        return bundle

    def __repr__(self) -> str:
        lines = ["wolt panel"]
        lines += [f"deployment {d.name}: {d.status}, revision {d.revision}" for d in self.deployments]
        lines += [f"model {m['name']}: {len(m['versions'])} versions" for m in self.models]
        return "\n".join(lines)


def _weights(text: str) -> dict[str, int]:
    from wolt_jupyter.tracking import parse_pairs

    return parse_pairs(text.split(), example="main=50 challenger=50")


def _html(value: str) -> Any:
    import ipywidgets as w

    return w.HTML(value)


def _registry_html(models: list[dict[str, Any]]) -> str:
    if not models:
        return "<i>no registered models</i>"
    rows = []
    for m in models:
        for v in m["versions"]:
            badges = " ".join(f"<code>@{html.escape(a)}</code>" for a in v["aliases"])
            rows.append(
                f"<tr><td>{html.escape(m['name'])}</td><td>v{v['version']}</td><td>{badges}</td></tr>"
            )
    return (
        "<table class='wolt-panel-models'><tr><th>model</th><th>version</th><th>aliases</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def panel(name: str | None = None) -> WoltPanel:
    """The registry + deployments + deploy form panel (``%wolt_panel [NAME]``)."""
    return WoltPanel(name)
