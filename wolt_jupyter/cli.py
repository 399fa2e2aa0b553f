"""``wolt-jupyter …``: the same core for terminals, CI and services. Errors are one line on stderr, exit 1."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from wolt_jupyter import __version__
from wolt_jupyter.errors import WoltError


def _config(args: argparse.Namespace) -> int:
    from wolt_jupyter.config import settings

    print(repr(settings()))
    return 0


def _models(args: argparse.Namespace) -> int:
    from wolt_jupyter.registry import models

    frame = models(args.name)
    if frame.empty:
        print("no registered models yet: register one with %wolt_register or wolt_jupyter.register(...)")
    else:
        print(frame.drop(columns=["source"]).to_string(index=False))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wolt-jupyter", description=__doc__)
    parser.add_argument("--version", action="version", version=f"wolt-jupyter {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("config", help="show the effective settings (secrets masked)").set_defaults(func=_config)
    models = sub.add_parser("models", help="registered models, versions and aliases")
    models.add_argument("name", nargs="?", help="only this model")
    models.set_defaults(func=_models)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except WoltError as exc:
        print(f"wolt-jupyter: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
