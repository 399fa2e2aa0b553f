"""``wolt-jupyter …``: the same core for terminals, CI and services. Errors are one line on stderr, exit 1."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from wolt_jupyter._version import __version__
from wolt_jupyter.errors import WoltError

if TYPE_CHECKING:
    import threading


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


def _print_deployment(d: object) -> None:
    print(repr(d))


def _deploy(args: argparse.Namespace) -> int:
    from wolt_jupyter import deployments

    d = deployments.deploy(
        args.name or _spec_name(args.spec),
        spec=args.spec,
        target=args.target,
        namespace=args.namespace,
        dry_run=args.dry_run,
        wait=not args.no_wait,
        progress=None if args.quiet else (lambda msg: print(msg, file=sys.stderr)),
    )
    _print_deployment(d)
    return 0 if d.status in ("ready", "dry-run") or args.no_wait else 1


def _spec_name(path: str) -> str:
    from wolt_jupyter.deployments import load_spec

    return load_spec(path).name


def _deployments(args: argparse.Namespace) -> int:
    from wolt_jupyter import deployments

    frame = deployments.deployments()
    print("no deployments" if frame.empty else frame.to_string(index=False))
    return 0


def _traffic(args: argparse.Namespace) -> int:
    from wolt_jupyter import deployments
    from wolt_jupyter.deployments import parse_weights

    _print_deployment(deployments.traffic(args.name, parse_weights(args.weights)))
    return 0


def _promote(args: argparse.Namespace) -> int:
    from wolt_jupyter import deployments

    _print_deployment(deployments.promote(args.name, args.variant))
    return 0


def _rollback(args: argparse.Namespace) -> int:
    from wolt_jupyter import deployments

    _print_deployment(deployments.rollback(args.name))
    return 0


def _undeploy(args: argparse.Namespace) -> int:
    from wolt_jupyter import deployments

    print(repr(deployments.undeploy(args.name)))
    return 0


def _up(args: argparse.Namespace) -> int:
    from wolt_jupyter import deployments

    results = deployments.up(progress=lambda msg: print(msg, file=sys.stderr))
    for d in results:
        print(
            f"{d.name}: {d.status}"
            + (f" at {d.url}" if d.url else "")
            + (f" ({d.message})" if d.message else "")
        )
    if not results:
        print("no local deployments recorded")
    return 0 if all(d.status == "ready" for d in results) else 1


def _updater_run(args: argparse.Namespace) -> int:
    import logging
    from pathlib import Path

    from wolt_jupyter.logfile import rotate_by_size
    from wolt_jupyter.updater.policy import from_yaml_file
    from wolt_jupyter.updater.run import serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    rotate_by_size()  # the service's log, when its supervisor keeps one
    base = Path(args.base or Path(args.policy).expanduser().parent)
    adopt = Path(args.adopt) if args.adopt else None
    serve(from_yaml_file(args.policy, base), stop=_stop_on_signals(), workdir=base, adopt=adopt)
    return 0


def _updater_render(args: argparse.Namespace) -> int:
    from wolt_jupyter.updater.manifests import render_for_cluster, to_yaml
    from wolt_jupyter.updater.policy import Policy

    print(to_yaml(render_for_cluster(Policy.load(args.policy), args.namespace)), end="")
    return 0


def _stop_on_signals() -> threading.Event:
    import signal
    import threading

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def _steer(args: argparse.Namespace) -> int:
    from wolt_jupyter.updater.control import asker, steer

    print(repr(steer(args.name, args.updater_command, by=asker("wolt-jupyter updater"))))
    return 0


def _updates(args: argparse.Namespace) -> int:
    from wolt_jupyter.updater.history import updates

    print(repr(updates(args.name)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wolt-jupyter", description=__doc__)
    parser.add_argument("--version", action="version", version=f"wolt-jupyter {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("config", help="show the effective settings (secrets masked)").set_defaults(func=_config)
    models = sub.add_parser("models", help="registered models, versions and aliases")
    models.add_argument("name", nargs="?", help="only this model")
    models.set_defaults(func=_models)

    deploy = sub.add_parser("deploy", help="deploy a spec file (what a CI job runs); exits 1 unless ready")
    deploy.add_argument("--spec", required=True, help="deployment spec (YAML); aliases are pinned at deploy")
    deploy.add_argument("--name", default=None, help="deploy under this name (default: the spec's)")
    deploy.add_argument("--target", default=None, help="local, kubernetes, seldon or kserve")
    deploy.add_argument("--namespace", default=None)
    deploy.add_argument("--dry-run", action="store_true", help="print what would be applied, change nothing")
    deploy.add_argument("--no-wait", action="store_true", help="return once applied, not once ready")
    deploy.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    deploy.set_defaults(func=_deploy)
    sub.add_parser("deployments", help="every deployment with its status").set_defaults(func=_deployments)
    traffic = sub.add_parser("traffic", help="new weights for the live variants: NAME main=90 challenger=10")
    traffic.add_argument("name")
    traffic.add_argument("weights", nargs="+", metavar="VARIANT=WEIGHT")
    traffic.set_defaults(func=_traffic)
    promote = sub.add_parser("promote", help="one variant takes all the traffic (shadows stay)")
    promote.add_argument("name")
    promote.add_argument("variant")
    promote.set_defaults(func=_promote)
    rollback = sub.add_parser("rollback", help="apply the previous revision again")
    rollback.add_argument("name")
    rollback.set_defaults(func=_rollback)
    undeploy = sub.add_parser("undeploy", help="stop a deployment (its log and revisions stay)")
    undeploy.add_argument("name")
    undeploy.set_defaults(func=_undeploy)
    sub.add_parser(
        "up", help="start every local deployment recorded as running whose process is gone (after a reboot)"
    ).set_defaults(func=_up)
    updater = sub.add_parser("updater", help="the automatic update service")
    usub = updater.add_subparsers(dest="updater_command", required=True, metavar="COMMAND")
    run = usub.add_parser("run", help="run the service of a policy in the foreground (SIGTERM stops it)")
    run.add_argument("--policy", required=True, help="policy YAML (see docs/reference/update-policy.md)")
    run.add_argument(
        "--base",
        help="folder relative paths of the policy (dataset, retraining) are in (default: the file's)",
    )
    run.add_argument(
        "--adopt",
        help="a cluster deployment's adoption document (what `updater render` puts in the pod), recorded in "
        "this state dir unless it has the deployment already",
    )
    run.set_defaults(func=_updater_run)
    render = usub.add_parser(
        "render",
        help="the service's manifests for a cluster (kubectl apply -f -): RBAC, policy, state, Deployment",
    )
    render.add_argument("--policy", required=True, help="policy YAML")
    render.add_argument("--target", required=True, choices=["kubernetes"])
    render.add_argument("--namespace", help="default: the configured namespace")
    render.set_defaults(func=_updater_render)
    history = usub.add_parser("history", help="every decision of a deployment's service, with its numbers")
    history.add_argument("name")
    history.set_defaults(func=_updates)
    for command, text in (
        ("pause", "pause a deployment's rollout: no step is taken until it is resumed"),
        ("resume", "resume a paused rollout (a step a person changed is applied again)"),
        ("promote-now", "promote the candidate now"),
        ("abort", "the champion alone now; the candidate is rejected"),
        ("approve", "grant the step the rollout waits to take"),
    ):
        steer = usub.add_parser(command, help=text)
        steer.add_argument("name")
        steer.set_defaults(func=_steer)
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
