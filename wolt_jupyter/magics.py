"""``%wolt_*`` magics: parse the line, call the core, return a rich object. Nothing else lives here.

Only IPython is imported at module level, so ``%load_ext wolt_jupyter`` stays fast; each magic imports the
core module it calls. A wrong argument becomes a :class:`UsageError` (IPython shows it without a traceback);
other domain errors render as one line through ``WoltError._render_traceback_``.
"""

from __future__ import annotations

import ast
import functools
import shlex
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments

from wolt_jupyter.config import TARGETS
from wolt_jupyter.errors import InvalidArgument

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell

F = TypeVar("F", bound=Callable[..., Any])


def _usage_errors(func: F) -> F:
    """Report an :class:`InvalidArgument` from the core as a ``UsageError`` (what IPython shows for bad input)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        __tracebackhide__ = True
        try:
            return func(*args, **kwargs)
        except InvalidArgument as exc:
            raise UsageError(str(exc)) from None

    return wrapper  # type: ignore[return-value]


def parse_argstring(magic: Callable[..., Any], line: str) -> Any:
    """Parse a magic's line with shell quoting (``--name "my model"`` is one value, without the quotes)."""
    try:
        argv = shlex.split(line)
    except ValueError as exc:
        raise UsageError(f"cannot parse the arguments ({exc}): close the quote") from None
    return magic.parser.parse_args(argv)  # type: ignore[attr-defined]  # raises UsageError on bad arguments


REVISION_HELP = (
    'revisions of the response log to read: a number, several (3,4) or "all" (default: since the last deploy)'
)


def parse_revision(value: str | None) -> Any:
    """The value of ``--revision`` in every magic that reads the response log (:func:`revisions.parse_revision`:
    a number, several or ``all``; absent, since the last deploy); anything else a :class:`UsageError` that
    shows the forms."""
    from wolt_jupyter.revisions import parse_revision as parse

    try:
        return parse(value)
    except InvalidArgument as exc:
        raise UsageError(str(exc)) from None


@magics_class
class WoltMagics(Magics):
    """The ``%wolt_*`` magics. ``%wolt_<name>?`` shows each one's arguments."""

    # -- helpers --------------------------------------------------------------------------------------------
    @property
    def _shell(self) -> InteractiveShell:
        """The shell the magics are registered with: IPython types ``Magics.shell`` as optional, but a magic
        only runs from a shell."""
        shell = self.shell
        assert shell is not None, "the wolt magics run inside an IPython shell"
        return shell

    def _variable(self, name: str, what: str) -> Any:
        if not name.isidentifier():
            raise UsageError(f"{what} must be a variable name, got {name!r}")
        try:
            return self._shell.user_ns[name]
        except KeyError:
            raise UsageError(
                f"no variable {name!r} in the notebook: define it first, or check the spelling"
            ) from None

    def _notebook_path(self) -> str | None:
        ns = self._shell.user_ns
        # ipykernel sets __session__ to the notebook path; VS Code sets __vsc_ipynb_file__
        for key in ("__vsc_ipynb_file__", "__session__"):
            value = ns.get(key)
            if isinstance(value, str) and value.endswith(".ipynb"):
                return value
        import os

        return os.environ.get("JPY_SESSION_NAME") or None

    def _run_code(self, cell: str) -> Any:
        """Run the cell in the user namespace like a normal cell: the last expression's value is returned."""
        __tracebackhide__ = True
        code = self._shell.transform_cell(cell)
        try:  # register the source so a traceback shows the cell's lines
            filename = self._shell.compile.cache(code)
        except Exception:
            filename = "<wolt_experiment>"
        tree = ast.parse(code, filename=filename)
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = ast.Expression(tree.body.pop().value)
        ns_globals, ns_locals = self._shell.user_global_ns, self._shell.user_ns
        exec(compile(tree, filename, "exec"), ns_globals, ns_locals)
        if last is not None:
            return eval(compile(last, filename, "eval"), ns_globals, ns_locals)
        return None

    # -- settings -------------------------------------------------------------------------------------------
    @line_magic
    @_usage_errors
    def wolt_config(self, line: str = "") -> Any:
        """Show the effective settings and where each comes from (secrets masked)."""
        if line.strip():
            raise UsageError(
                "%wolt_config takes no arguments; set WOLT_JUPYTER_HOME, MLFLOW_TRACKING_URI, ..."
            )
        from wolt_jupyter.config import settings

        return settings()

    # -- experiments ----------------------------------------------------------------------------------------
    @magic_arguments()
    @argument("experiment", help="MLflow experiment name (created if missing)")
    @argument("--run-name", dest="run_name", default=None, help="name of the run")
    @argument("--tag", action="append", default=[], metavar="KEY=VALUE", help="run tag; repeatable")
    @argument(
        "--no-autolog", dest="autolog", action="store_false", help="no MLflow autologging (mlflow.autolog)"
    )
    @argument(
        "--infer-requirements",
        dest="infer_requirements",
        action="store_true",
        help="let MLflow infer logged models' pip requirements (a subprocess, ~4 s) instead of the flavor's",
    )
    @cell_magic
    @_usage_errors
    def wolt_experiment(self, line: str, cell: str) -> Any:
        """Run the cell inside an MLflow run: MLflow's autologging on, the cell saved as ``cell.py``, a run card
        returned (MLflow's routine output in its collapsed log).

        An exception in the cell marks the run FAILED and is raised again.
        """
        __tracebackhide__ = True
        args = parse_argstring(self.wolt_experiment, line)
        from wolt_jupyter import tracking

        tags = tracking.parse_pairs(args.tag, example="--tag team=search")
        try:
            ast.parse(self._shell.transform_cell(cell))
        except SyntaxError as exc:
            raise UsageError(
                f"the cell has a syntax error on line {exc.lineno}: {exc.msg}; no run was started"
            ) from None
        with tracking.experiment(
            args.experiment,
            run_name=args.run_name,
            tags={k: str(v) for k, v in tags.items()},
            autolog=args.autolog,
            infer_requirements=args.infer_requirements,
            source=cell,
            notebook=self._notebook_path(),
        ) as run:
            value = self._run_code(cell)
        if value is not None:
            from IPython.display import display

            display(value)
        return run.card

    @magic_arguments()
    @argument("pairs", nargs="*", metavar="KEY=VALUE", help="numbers become metrics, other values params")
    @argument("--run", dest="run_id", default=None, help="run id (default: the active or last run)")
    @argument("--step", type=int, default=None, help="metric step")
    @line_magic
    @_usage_errors
    def wolt_log(self, line: str) -> Any:
        """Log ``KEY=VALUE`` pairs to the active or last run: numbers as metrics, the rest as params."""
        args = parse_argstring(self.wolt_log, line)
        from wolt_jupyter import tracking

        pairs = tracking.parse_pairs(args.pairs, example="%wolt_log accuracy=0.93 notes=baseline")
        return tracking.log(pairs, run_id=args.run_id, step=args.step)

    # -- registry -------------------------------------------------------------------------------------------
    @magic_arguments()
    @argument("variable", nargs="?", default=None, help="a fitted model in the notebook to log and register")
    @argument("--name", required=True, help="registered model name")
    @argument("--alias", action="append", default=[], help="alias to point at the new version; repeatable")
    @argument("--run", dest="run_id", default=None, help="register the model logged by this run")
    @argument(
        "--input-example",
        dest="input_example",
        default=None,
        metavar="VARIABLE",
        help="rows of features (DataFrame/array) to infer the signature from",
    )
    @argument("--experiment", default=None, help="experiment to log a model variable in")
    @argument("--description", default=None, help="version description")
    @argument(
        "--reference", default=None, metavar="VARIABLE", help="training inputs kept as the drift baseline"
    )
    @line_magic
    @_usage_errors
    def wolt_register(self, line: str) -> Any:
        """Register the model of the last experiment run (or a fitted model variable) and set aliases."""
        args = parse_argstring(self.wolt_register, line)
        model = self._variable(args.variable, "the model") if args.variable else None
        example = self._variable(args.input_example, "--input-example") if args.input_example else None
        if example is not None and model is None:
            raise UsageError(
                "--input-example goes with a model variable: %wolt_register model --name NAME --input-example X"
            )
        reference = self._variable(args.reference, "--reference") if args.reference else None
        from wolt_jupyter import registry

        return registry.register(
            model,
            name=args.name,
            aliases=args.alias,
            run_id=args.run_id,
            input_example=example,
            experiment=args.experiment,
            description=args.description,
            reference=reference,
        )

    @magic_arguments()
    @argument("name", nargs="?", default=None, help="only this registered model")
    @line_magic
    @_usage_errors
    def wolt_models(self, line: str) -> Any:
        """Registered models, versions and aliases as a DataFrame."""
        args = parse_argstring(self.wolt_models, line)
        from wolt_jupyter import registry

        return registry.models(args.name)

    # -- deployments ----------------------------------------------------------------------------------------
    def _progress(self) -> Any:
        """Progress lines for long waits, printed as they happen."""

        def say(message: str) -> None:
            print(message, flush=True)

        return say

    @magic_arguments()
    @argument("name", help="deployment name (DNS-1123: lowercase letters, digits, '-')")
    @argument("--model", default=None, metavar="[NAME:]URI", help="the main model, e.g. models:/eta@champion")
    @argument(
        "--ab", action="append", default=[], metavar="[NAME:]URI=WEIGHT", help="A/B challenger; repeatable"
    )
    @argument("--canary", default=None, metavar="[NAME:]URI=WEIGHT", help="canary variant")
    @argument(
        "--shadow", action="append", default=[], metavar="[NAME:]URI", help="shadow variant; repeatable"
    )
    @argument(
        "--sticky-key", dest="sticky_key", default=None, help="route the same key value to the same variant"
    )
    @argument(
        "--spec",
        default=None,
        metavar="FILE_OR_VARIABLE",
        help="a whole spec: YAML file or notebook variable",
    )
    @argument("--target", default=None, choices=TARGETS)
    @argument("--namespace", default=None, help="Kubernetes namespace")
    @argument(
        "--dry-run", dest="dry_run", action="store_true", help="change nothing; show what would be applied"
    )
    @argument("--no-wait", dest="wait", action="store_false", help="return without waiting for readiness")
    @line_magic
    @_usage_errors
    def wolt_deploy(self, line: str) -> Any:
        """Deploy a registered model, with A/B, canary and shadow variants, locally or to a cluster."""
        args = parse_argstring(self.wolt_deploy, line)
        spec = None
        if args.spec is not None:
            spec = self._shell.user_ns.get(args.spec, args.spec) if args.spec.isidentifier() else args.spec
        from wolt_jupyter import deployments

        return deployments.deploy(
            args.name,
            args.model,
            ab=args.ab,
            canary=args.canary,
            shadow=args.shadow,
            sticky_key=args.sticky_key,
            spec=spec,
            target=args.target,
            namespace=args.namespace,
            dry_run=args.dry_run,
            wait=args.wait,
            progress=self._progress(),
        )

    @magic_arguments()
    @argument("name")
    @argument(
        "weights", nargs="+", metavar="VARIANT=WEIGHT", help="weights of the live variants, summing to 100"
    )
    @line_magic
    @_usage_errors
    def wolt_traffic(self, line: str) -> Any:
        """Change the traffic split of a running deployment, without a restart."""
        args = parse_argstring(self.wolt_traffic, line)
        from wolt_jupyter import deployments

        return deployments.traffic(args.name, deployments.parse_weights(args.weights))

    @magic_arguments()
    @argument("name")
    @argument("variant", help="the variant that takes all the traffic")
    @line_magic
    @_usage_errors
    def wolt_promote(self, line: str) -> Any:
        """Make one variant the only live one (shadows stay)."""
        args = parse_argstring(self.wolt_promote, line)
        from wolt_jupyter import deployments

        return deployments.promote(args.name, args.variant)

    @magic_arguments()
    @argument("name")
    @line_magic
    @_usage_errors
    def wolt_rollback(self, line: str) -> Any:
        """Go back to the previous revision of a deployment."""
        args = parse_argstring(self.wolt_rollback, line)
        from wolt_jupyter import deployments

        return deployments.rollback(args.name)

    @magic_arguments()
    @argument("name")
    @line_magic
    @_usage_errors
    def wolt_undeploy(self, line: str) -> Any:
        """Stop a deployment (its response log and revisions stay readable); says what was not logged."""
        args = parse_argstring(self.wolt_undeploy, line)
        from wolt_jupyter import deployments

        return deployments.undeploy(args.name)

    @magic_arguments()
    @argument("name", help="the deployment the service updates")
    @argument(
        "--policy", default=None, help="policy YAML file, or a variable holding a dict / Policy / YAML text"
    )
    @argument("--stop", action="store_true", help="stop the deployment's service")
    @argument("--pause", action="store_true", help="pause the rollout: no step is taken until --resume")
    @argument("--resume", action="store_true", help="resume a paused rollout (a changed step re-applied)")
    @argument("--promote-now", dest="promote_now", action="store_true", help="promote the candidate now")
    @argument("--abort", action="store_true", help="the champion alone now; the candidate is rejected")
    @argument("--approve", action="store_true", help="grant the step the rollout waits to take")
    @line_magic
    @_usage_errors
    def wolt_autoupdate(self, line: str) -> Any:
        """Start (or --stop) the automatic update service of a deployment as a supervised background process;
        steer its rollout (--pause, --resume, --promote-now, --abort, --approve)."""
        args = parse_argstring(self.wolt_autoupdate, line)
        asked = [c for c in ("pause", "resume", "promote_now", "abort", "approve") if getattr(args, c)]
        if len(asked) + bool(args.stop) + bool(args.policy) > 1:
            raise UsageError(
                "give one of --policy, --stop, --pause, --resume, --promote-now, --abort or --approve"
            )
        if asked:
            from wolt_jupyter.updater.control import asker, steer

            return steer(args.name, asked[0].replace("_", "-"), by=asker("%wolt_autoupdate"))
        from wolt_jupyter.updater import run

        if args.stop:
            stopped = run.stop_service(args.name)
            print(f"update service of {args.name!r} {'stopped' if stopped else 'was not running'}")
            left = run.left_behind(args.name)
            if left:
                print(f"Mid-rollout: {left}")
            waiting = run.waiting_messages(args.name)
            if waiting:
                print(f"{waiting} webhook message(s) not sent yet: they go when the service runs again")
            return None
        if not args.policy:
            raise UsageError(f"give the policy: %wolt_autoupdate {args.name} --policy policy.yaml")
        source: Any = self._shell.user_ns.get(args.policy, args.policy)
        from wolt_jupyter.updater.policy import Policy

        policy = Policy.load(source)
        if policy.deployment != args.name:
            raise UsageError(f"the policy is for deployment {policy.deployment!r}, not {args.name!r}")
        st = run.start(source)
        print(
            f"update service of {args.name!r} started (pid {st.get('supervisor_pid')}); %wolt_updates {args.name} shows its decisions"
        )
        return None

    @magic_arguments()
    @argument("name")
    @line_magic
    @_usage_errors
    def wolt_updates(self, line: str) -> Any:
        """The update service's decisions for a deployment: each candidate, gate and step with its numbers."""
        args = parse_argstring(self.wolt_updates, line)
        from wolt_jupyter.updater.history import updates

        return updates(args.name)

    @magic_arguments()
    @argument(
        "--restart",
        action="store_true",
        help="first start every local deployment recorded as running whose process is gone (after a reboot)",
    )
    @line_magic
    @_usage_errors
    def wolt_deployments(self, line: str = "") -> Any:
        """All deployments on this machine's state dir, made by any kernel, with their status and restarts."""
        args = parse_argstring(self.wolt_deployments, line)
        from wolt_jupyter import deployments

        if args.restart:
            deployments.up()
        return deployments.deployments()

    @magic_arguments()
    @argument("name")
    @argument("variable", help="a DataFrame (or 2-D array) of rows to send")
    @argument(
        "--per-row",
        dest="per_row",
        action="store_true",
        help="one request per row (the split applies per row)",
    )
    @argument(
        "--route-key", dest="route_key", default=None, metavar="COLUMN", help="column sent as the sticky key"
    )
    @line_magic
    @_usage_errors
    def wolt_predict(self, line: str) -> Any:
        """Send rows through a deployment's endpoint; predictions with the answering variant."""
        args = parse_argstring(self.wolt_predict, line)
        data = self._variable(args.variable, "the rows")
        from wolt_jupyter import deployments

        return deployments.predict(
            args.name, data, per_row=args.per_row or bool(args.route_key), route_key_column=args.route_key
        )

    @magic_arguments()
    @argument("name", help="deployment name, or its runtime URL")
    @argument(
        "labels",
        help="a Series of ground truth indexed by request id, or a DataFrame with an id and a label column",
    )
    @argument(
        "--ids",
        default=None,
        metavar="VARIABLE",
        help="the %%wolt_predict result the labels belong to (matched by index) or a list of request ids",
    )
    @argument("--id-column", dest="id_column", default=None, help="DataFrame column of request ids (default: id)")
    @argument("--label-column", dest="label_column", default=None, help="DataFrame column of the labels")
    @line_magic
    @_usage_errors
    def wolt_feedback(self, line: str) -> Any:
        """Send ground truth for earlier requests (joined by request id) to a deployment's feedback endpoint."""
        args = parse_argstring(self.wolt_feedback, line)
        labels = self._variable(args.labels, "the labels")
        ids = self._variable(args.ids, "--ids") if args.ids else None
        from wolt_jupyter.ground_truth import feedback

        return feedback(
            args.name, labels, ids=ids, id_column=args.id_column, label_column=args.label_column
        )

    @magic_arguments()
    @argument("name")
    @argument("--since", default=None, help="e.g. 1h, 30m, 2d, or an ISO time (default: no lower bound)")
    @argument("--until", default=None, help="end of the window, exclusive (same forms as --since)")
    @argument("--variant", default=None)
    @argument("--limit", type=int, default=None, help="the newest N logged requests")
    @argument("--revision", default=None, metavar="N|all", help=REVISION_HELP)
    @argument("--columns", default=None, help="comma-separated columns to read, e.g. time,input.x1,output.y")
    @argument("--export", default=None, metavar="PATH.parquet", help="write the rows to a Parquet file")
    @argument("--info", action="store_true", help="the log's size, retention and disk space (a card)")
    @line_magic
    @_usage_errors
    def wolt_responses(self, line: str) -> Any:
        """The response log of a deployment as a DataFrame (works after it stopped too); ``--export`` writes
        it to Parquet for DuckDB/Spark, ``--info`` shows its size and what retention removed."""
        args = parse_argstring(self.wolt_responses, line)
        from wolt_jupyter import deployments

        filters: dict[str, Any] = {"since": args.since, "until": args.until, "variant": args.variant}
        filters["limit"] = args.limit
        filters["revision"] = parse_revision(args.revision)
        if args.columns:
            filters["columns"] = [c.strip() for c in args.columns.split(",") if c.strip()]
        if args.export:
            from wolt_jupyter.responses.query import export

            deployments.flush_log(args.name)  # a running deployment writes what it answered first
            filters["revision"] = deployments.revisions_for(args.name, filters["revision"])
            card = deployments.log_summary(args.name)
            card.export = export(args.name, args.export, **filters)
            return card
        if args.info:
            return deployments.log_summary(args.name)
        return deployments.read_responses(args.name, **filters)

    # -- monitoring -----------------------------------------------------------------------------------------
    @magic_arguments()
    @argument("name")
    @argument("--since", default="30m", help="time range shown, e.g. 15m, 1h, 24h")
    @argument("--step", default="15s", help="resolution of the series")
    @argument("--refresh", type=float, default=10.0, help="seconds between refreshes; 0 renders once")
    @argument("--revision", default=None, metavar="N|all", help=REVISION_HELP)
    @line_magic
    @_usage_errors
    def wolt_monitor(self, line: str) -> Any:
        """Live panel: requests/s, errors, latency, predictions per variant, shadow agreement, log health.

        Reads Prometheus when WOLT_PROMETHEUS_URL is set, else the response log: there, the revisions since
        the last deploy (``--revision``), a series a run of the same models, each revision change marked on
        the time axis. Closing the panel stops its refresh task; exported notebooks keep static PNG figures.
        """
        args = parse_argstring(self.wolt_monitor, line)
        if args.refresh < 0:
            raise UsageError("--refresh is seconds between refreshes (0 renders once), not negative")
        revision = parse_revision(args.revision)
        from wolt_jupyter.widgets.monitor import monitor

        return monitor(
            args.name, since=args.since, step=args.step, refresh=args.refresh or None, revision=revision
        )

    @magic_arguments()
    @argument("name", nargs="?", default=None, help="show only models and deployments whose name contains it")
    @line_magic
    @_usage_errors
    def wolt_panel(self, line: str) -> Any:
        """Registry, deployments and a deploy form as one widget panel (for front ends without the lab
        extension): deploy with A/B and shadow, change traffic, promote, roll back, undeploy."""
        args = parse_argstring(self.wolt_panel, line)
        from wolt_jupyter.widgets.panel import panel

        return panel(args.name)

    @magic_arguments()
    @argument("name")
    @argument(
        "--metric",
        default=None,
        choices=["accuracy", "auc", "rmse", "mae", "error_rate"],
        help="model metric from feedback labels",
    )
    @argument("--since", default=None, help="e.g. 1h, 2d (default: no lower bound)")
    @argument("--revision", default=None, metavar="N|all", help=REVISION_HELP)
    @argument("--effect", type=float, default=None, help="smallest difference worth detecting")
    @argument(
        "--tolerance",
        type=float,
        default=None,
        help="regression shadows: |shadow - main| still counted as agreeing (default 10%% of main's s.d.)",
    )
    @line_magic
    @_usage_errors
    def wolt_compare(self, line: str) -> Any:
        """Compare a deployment's variants over the revisions since the last deploy (``--revision``): a
        compact summary (requests, share, errors, p99, metric with its interval, verdict); ``.details`` and
        ``.shadow_table`` have every number."""
        args = parse_argstring(self.wolt_compare, line)
        if args.tolerance is not None and args.tolerance < 0:
            raise UsageError("--tolerance is a distance in the model's output units: 0 or more")
        revision = parse_revision(args.revision)
        from wolt_jupyter.monitoring import reports

        return reports.compare(
            args.name,
            metric=args.metric,
            since=args.since,
            revision=revision,
            effect=args.effect,
            tolerance=args.tolerance,
        )

    @magic_arguments()
    @argument("name")
    @argument("--variant", default=None, help="default: the first live variant")
    @argument("--since", default=None, help="e.g. 1h, 30m, or an ISO time (default: no lower bound)")
    @argument("--revision", default=None, metavar="N|all", help=REVISION_HELP)
    @argument("--psi-threshold", dest="psi_threshold", type=float, default=0.2)
    @line_magic
    @_usage_errors
    def wolt_drift(self, line: str) -> Any:
        """Input drift of a deployment's variant against its model version's training reference (PSI, KS),
        over the rows that model version answered in the revisions read (default: since the last deploy)."""
        args = parse_argstring(self.wolt_drift, line)
        revision = parse_revision(args.revision)
        from wolt_jupyter.monitoring import reports

        return reports.drift(
            args.name,
            variant=args.variant,
            since=args.since,
            revision=revision,
            psi_threshold=args.psi_threshold,
        )
