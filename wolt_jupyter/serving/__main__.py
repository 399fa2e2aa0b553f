"""``python -m wolt_jupyter.serving --spec SPEC.yaml [--host 127.0.0.1] [--port 8080] [--grpc-port P] [--state-dir DIR]``

The port opens at once (``/v2/health/live`` answers while models load); ``/v2/health/ready`` turns 200 only
when every variant is loaded. SIGTERM/SIGINT stop accepting connections (requests on open ones get 503
"shutting down" with Retry-After), finish queued shadow work and flush the response log before exiting.
HTTP limits come from the spec's ``limits`` (see ``serving.http.Limits``); the flags below override them. Exit status 2: the spec is unreadable or invalid; 3: a model cannot be loaded.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

from wolt_jupyter.serving.dataplane import MAX_BATCH, DataPlane
from wolt_jupyter.serving.http import Limits, serve
from wolt_jupyter.serving.isolation import DEFAULT_QUEUE
from wolt_jupyter.serving.tally import EVERY_S as TALLY_EVERY_S
from wolt_jupyter.serving.tally import Tally, counts

log = logging.getLogger("wolt_jupyter.serving")
EXIT_BAD_SPEC = 2
EXIT_LOAD_FAILED = 3
SHADOW_DRAIN_S = 10.0  # at shutdown, queued shadow copies get this long; the rest are counted as not logged
SETTLE_S = 5.0  # at shutdown, live requests already queued for a variant get this long to be answered


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m wolt_jupyter.serving", description=__doc__.splitlines()[0])
    p.add_argument("--spec", required=True, help="deployment spec (YAML); model URIs pinned to versions")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument(
        "--grpc-port", type=int, default=None, help="also serve inference.GRPCInferenceService here"
    )
    p.add_argument("--state-dir", default=None, help="state dir (default: settings().home)")
    p.add_argument("--max-body-bytes", type=int, default=None, help="413 above (default 32 MiB)")
    p.add_argument("--idle-timeout", type=float, default=None, help="close keep-alives quiet this long (s)")
    p.add_argument("--max-header-count", type=int, default=None, help="431 above (default 100)")
    p.add_argument("--max-header-bytes", type=int, default=None, help="431 above (default 64 KiB)")
    p.add_argument("--max-url-bytes", type=int, default=None, help="414 above (default 8 KiB)")
    p.add_argument("--header-timeout", type=float, default=None, help="408 if headers take longer (s)")
    p.add_argument("--body-timeout", type=float, default=None, help="408 if the body takes longer (s)")
    p.add_argument(
        "--max-connections",
        type=int,
        default=None,
        help="open connections; at the cap the oldest idle one is closed, 503 if none is (default 1024)",
    )
    p.add_argument(
        "--max-unsent-bytes",
        type=int,
        default=None,
        help="a connection is not read past this (default 256 KiB)",
    )
    p.add_argument(
        "--max-pipelined",
        type=int,
        default=None,
        help="unanswered requests a connection may send (default 64)",
    )
    p.add_argument(
        "--send-timeout", type=float, default=None, help="drop a client taking nothing this long (s)"
    )
    p.add_argument(
        "--grpc-max-concurrent-rpcs", type=int, default=None, help="gRPC calls at once (default 64)"
    )
    p.add_argument(
        "--grpc-max-infer-streams", type=int, default=None, help="open ModelStreamInfer streams (default 4)"
    )
    p.add_argument("--response-store-url", default=None, help="default: WOLT_RESPONSE_STORE_URL or SQLite")
    p.add_argument("--no-response-log", action="store_true", help="override the spec: log nothing")
    p.add_argument(
        "--max-batch", type=int, default=MAX_BATCH, help="requests per live predict (1: no micro-batching)"
    )
    p.add_argument("--shadow-queue-size", type=int, default=10_000, help="copies a shadow may lag behind")
    p.add_argument(
        "--variant-queue-size",
        type=int,
        default=DEFAULT_QUEUE,
        help="requests a live variant may have waiting; past it a challenger's go to the champion, else 503",
    )
    p.add_argument(
        "--drain-seconds",
        type=float,
        default=0.0,
        help="at SIGTERM, keep answering open connections this long, each closed after its next answer "
        "(behind a load balancer: clients reconnect to another replica); 0: answer 503 at once",
    )
    p.add_argument("--log-level", default="INFO")
    return p.parse_args(argv)


async def _main(args: argparse.Namespace) -> int:
    from wolt_jupyter.config import settings
    from wolt_jupyter.errors import WoltError
    from wolt_jupyter.spec import DeploymentSpec

    s = settings()
    try:
        spec = DeploymentSpec.from_yaml(Path(args.spec).read_text())
    except (OSError, WoltError) as exc:
        log.error("cannot read the spec %s: %s", args.spec, exc)
        return EXIT_BAD_SPEC
    state_dir = Path(args.state_dir).expanduser().resolve() if args.state_dir else s.home
    from wolt_jupyter.serving.specwatch import SpecWatch, initial_revision

    initial_revision(Path(args.spec))  # a pod: the revision its ConfigMap names
    limits = _limits(spec.limits, args)
    runtime = DataPlane(
        spec,
        state_dir,
        max_body=limits.max_body,
        response_store_url=args.response_store_url or s.response_store_url,
        log_responses=False if args.no_response_log else None,
        shadow_queue_size=args.shadow_queue_size,
        max_batch=max(1, args.max_batch),
        queue_size=max(1, args.variant_queue_size),
    )
    loop = asyncio.get_running_loop()
    runtime.bind_loop(loop)
    from wolt_jupyter.serving.rest import RestApi

    server = await serve(RestApi(runtime).handle, args.host, args.port, limits=limits)
    grpc_server = None
    if args.grpc_port is not None:
        from wolt_jupyter.serving.grpc_service import start_server

        grpc_server = start_server(runtime, loop, args.host, args.grpc_port, limits=limits)
        log.info("deployment %s: gRPC on %s:%d", spec.name, args.host, args.grpc_port)
    log.info("deployment %s listening on http://%s:%d (loading models)", spec.name, args.host, args.port)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    from wolt_jupyter.serving.guard import guard_supervisor

    guard = guard_supervisor()  # a supervisor that dies is replaced, not followed
    loader = loop.run_in_executor(None, runtime.load)
    tally = Tally(state_dir, spec.name)  # what earlier processes of this deployment counted
    saving = asyncio.ensure_future(_keep_tally(tally, runtime))
    status = 0
    done, _ = await asyncio.wait(
        {loader, asyncio.ensure_future(stop.wait())}, return_when=asyncio.FIRST_COMPLETED
    )
    if loader in done and loader.exception() is not None:
        exc = loader.exception()
        runtime.load_error = f"{type(exc).__name__}: {exc}"
        log.error("cannot load the models of %s: %s", spec.name, runtime.load_error)
        status = EXIT_LOAD_FAILED
    elif loader in done:
        log.info("deployment %s ready", spec.name)
        # a pod follows its ConfigMap from now on (models loaded: a routing change can apply)
        watch = SpecWatch.from_env(runtime, Path(args.spec))
        if watch is not None:
            watch.start()
        await stop.wait()
        if watch is not None:
            watch.stop()
    if guard is not None:
        guard.set()  # stopping: whatever happens to the supervisor now is part of that
    if status == 0 and args.drain_seconds > 0:
        from wolt_jupyter.serving.http import drain

        left = await drain(server, args.drain_seconds)
        log.info("deployment %s drained (%d connections still open)", spec.name, left)
    saving.cancel()
    runtime.begin_shutdown()  # requests on open connections now get 503 "shutting down" + Retry-After
    server.close()
    if grpc_server is not None:
        stopped = grpc_server.stop(grace=5)
        await loop.run_in_executor(None, stopped.wait, 6)
    # what the variants' threads have queued or are predicting is answered (or times out) before closing
    await runtime.settle(timeout=SETTLE_S)
    shadow_drain = float(os.environ.get("WOLT_SHADOW_DRAIN_S", SHADOW_DRAIN_S))
    stats = await loop.run_in_executor(None, lambda: runtime.close(timeout=25.0, shadow_timeout=shadow_drain))
    _save_tally(tally, stats)
    log.info("deployment %s stopped: %s", spec.name, tally.totals(stats))
    return status


async def _keep_tally(tally: Tally, runtime: DataPlane) -> None:
    """Save the counts every few seconds (on the loop: a small file), so a crash loses at most that much."""
    while True:
        await asyncio.sleep(TALLY_EVERY_S)
        _save_tally(tally, counts(runtime))


def _save_tally(tally: Tally, stats: dict) -> None:
    """What the undeploy card reports: shadow copies discarded, log rows written/dropped/left in the spool."""
    try:
        tally.save(stats)
    except OSError as exc:
        log.warning("cannot write the shutdown summary: %s", exc)


def _limits(from_spec: dict, args: argparse.Namespace) -> Limits:
    """The spec's limits, each overridden by its flag when given."""
    flags = {
        "max_body": args.max_body_bytes,
        "idle_timeout": args.idle_timeout,
        "max_header_count": args.max_header_count,
        "max_header_bytes": args.max_header_bytes,
        "max_url_bytes": args.max_url_bytes,
        "header_timeout": args.header_timeout,
        "body_timeout": args.body_timeout,
        "max_connections": args.max_connections,
        "max_unsent_bytes": args.max_unsent_bytes,
        "max_pipelined": args.max_pipelined,
        "send_timeout": args.send_timeout,
        "grpc_max_concurrent_rpcs": args.grpc_max_concurrent_rpcs,
        "grpc_max_infer_streams": args.grpc_max_infer_streams,
    }
    return Limits(**{**dict(from_spec), **{k: v for k, v in flags.items() if v is not None}})


def _mask_record(record: logging.LogRecord) -> bool:
    """A log filter: every line the runtime logs goes through the one masking function (URL passwords)."""
    from wolt_jupyter.config import mask_url

    message = record.getMessage()
    masked = mask_url(message)
    if masked != message:
        record.msg, record.args = masked, None
    if record.exc_info and record.exc_info[1] is not None:
        record.exc_text = mask_url(logging.Formatter().formatException(record.exc_info))
    return True


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    os.umask(0o077)  # everything the runtime writes (response log, its files) is the user's alone
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(_mask_record)
    from wolt_jupyter.logfile import rotate_by_size

    rotate_by_size()  # runtime.log: a client that makes it log cannot fill the disk
    switch = os.environ.get("WOLT_SWITCH_INTERVAL_S")
    if switch:  # the loop and the variants' predict threads take turns holding the GIL this often at least
        sys.setswitchinterval(float(switch))
    try:
        if os.environ.get("WOLT_SERVING_UVLOOP", "1") == "0":  # to test the fallback
            raise ImportError("uvloop disabled by WOLT_SERVING_UVLOOP=0")
        import uvloop  # optional: a faster event loop when installed
    except ImportError:
        return asyncio.run(_main(args))
    return uvloop.run(_main(args))


if __name__ == "__main__":
    sys.exit(main())
