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
from typing import Any, TypeVar

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments

from wolt_jupyter.errors import InvalidArgument

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


@magics_class
class WoltMagics(Magics):
    """The ``%wolt_*`` magics. ``%wolt_<name>?`` shows each one's arguments."""

    # -- helpers --------------------------------------------------------------------------------------------
    def _variable(self, name: str, what: str) -> Any:
        if not name.isidentifier():
            raise UsageError(f"{what} must be a variable name, got {name!r}")
        try:
            return self.shell.user_ns[name]
        except KeyError:
            raise UsageError(
                f"no variable {name!r} in the notebook: define it first, or check the spelling"
            ) from None

    def _notebook_path(self) -> str | None:
        ns = self.shell.user_ns
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
        code = self.shell.transform_cell(cell)
        try:  # register the source so a traceback shows the cell's lines
            filename = self.shell.compile.cache(code)
        except Exception:
            filename = "<wolt_experiment>"
        tree = ast.parse(code, filename=filename)
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = ast.Expression(tree.body.pop().value)
        ns_globals, ns_locals = self.shell.user_global_ns, self.shell.user_ns
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
        "--no-autolog", dest="autolog", action="store_false", help="do not autolog sklearn/xgboost/lightgbm"
    )
    @cell_magic
    @_usage_errors
    def wolt_experiment(self, line: str, cell: str) -> Any:
        """Run the cell inside an MLflow run: autologging on, the cell saved as ``cell.py``, a run card returned.

        An exception in the cell marks the run FAILED and is raised again.
        """
        __tracebackhide__ = True
        args = parse_argstring(self.wolt_experiment, line)
        from wolt_jupyter import tracking

        tags = tracking.parse_pairs(args.tag, example="--tag team=search")
        try:
            ast.parse(self.shell.transform_cell(cell))
        except SyntaxError as exc:
            raise UsageError(
                f"the cell has a syntax error on line {exc.lineno}: {exc.msg}; no run was started"
            ) from None
        with tracking.experiment(
            args.experiment,
            run_name=args.run_name,
            tags={k: str(v) for k, v in tags.items()},
            autolog=args.autolog,
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
        from wolt_jupyter import registry

        return registry.register(
            model,
            name=args.name,
            aliases=args.alias,
            run_id=args.run_id,
            input_example=example,
            experiment=args.experiment,
            description=args.description,
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
