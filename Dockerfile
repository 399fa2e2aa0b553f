# syntax=docker/dockerfile:1
# The serving runtime image the `kubernetes` target deploys: the same runtime and router as local deployments,
# and nothing of the notebook side (no Jupyter, IPython, widgets, matplotlib, kubernetes client, full MLflow).
#   docker build -t wolt-jupyter-runtime:0.1.0 .
#   scripts/cluster/build-images.sh runtime     (buildah, on a Debian base made with debootstrap, pinned to
#                                                 the notebook venv's versions; see below)
# The pod gets its pinned spec from a ConfigMap at /etc/wolt-jupyter/spec.yaml, MLFLOW_TRACKING_URI from env,
# runs as uid 1000 with a read-only root file system and an emptyDir at /var/lib/wolt-jupyter.
#
# BASE_IMAGE: any Debian-like image with `python3` (3.10-3.13) that has the venv module: the public Python
# slim image by default, or Debian's own python3 + python3-venv (localhost/wolt-debian-base:bookworm).
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

# HOME and TMPDIR are the state dir: in the pod it is the only writable place (no /tmp mount), and anything
# that writes under $HOME or a temp dir (MLflow's artifact downloads, model caches) lands there.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    WOLT_JUPYTER_HOME=/var/lib/wolt-jupyter \
    HOME=/var/lib/wolt-jupyter \
    TMPDIR=/var/lib/wolt-jupyter \
    MLFLOW_DISABLE_TELEMETRY=true \
    DO_NOT_TRACK=true

RUN useradd --uid 1000 --user-group --no-create-home --home-dir /var/lib/wolt-jupyter wolt \
 && mkdir -p /var/lib/wolt-jupyter /etc/wolt-jupyter \
 && chown wolt:wolt /var/lib/wolt-jupyter \
 && python3 -m venv /opt/venv \
 && echo /opt/wolt-jupyter > "$(python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/wolt_jupyter.pth"

# Dependencies first (they change rarely; the package source changes every commit): what the runtime
# imports, listed in wolt_jupyter/serving/requirements.txt. Versions: runtime-constraints.txt, when the
# build context has one, pins them; scripts/cluster/build-images.sh writes it from the notebook venv's
# `pip freeze`, since models trained and pickled there (scikit-learn, skops, cloudpickle, numpy) must be
# loaded by the same versions here. Without it (a plain `docker build .`) pip picks the newest that fit.
# (The `[t]` makes the file optional: COPY takes a glob that may match nothing.)
# A build that reaches PyPI through a TLS proxy may pass the proxy's CA bundle as the secret `pip-cert`;
# it is mounted for this step only and never stored in the image. After the install: the dependencies' test
# suites and pyarrow's C++ headers go (never imported at run time), and everything is byte-compiled once,
# since the root file system is read-only at run time and nothing could be cached then.
COPY wolt_jupyter/serving/requirements.txt runtime-constraints.tx[t] /tmp/wolt-req/
RUN --mount=type=secret,id=pip-cert \
    set -e; \
    if [ -s /run/secrets/pip-cert ]; then export PIP_CERT=/run/secrets/pip-cert; fi; \
    c=""; if [ -f /tmp/wolt-req/runtime-constraints.txt ]; then c="-c /tmp/wolt-req/runtime-constraints.txt"; fi; \
    pip install --no-compile -r /tmp/wolt-req/requirements.txt $c; \
    site=$(python -c 'import sysconfig; print(sysconfig.get_path("purelib"))'); \
    find "$site" -mindepth 2 -type d -name tests -prune -exec rm -rf {} +; \
    rm -rf "$site"/pyarrow/include "$site"/pyarrow/src; \
    python -m compileall -q -j0 "$site" > /dev/null; \
    rm -rf /tmp/wolt-req

# The package itself, put on sys.path by the .pth above rather than `pip install .`: the wheel's build hooks
# want jupyterlab and Node (the lab extension), which the runtime has no use for. Entry points are not
# needed to serve. Only the source changes between commits, so only this layer is rebuilt.
COPY wolt_jupyter /opt/wolt-jupyter/wolt_jupyter
RUN rm -rf /opt/wolt-jupyter/wolt_jupyter/labextension \
 && python -m compileall -q -j0 /opt/wolt-jupyter/wolt_jupyter > /dev/null \
 && python -c "import wolt_jupyter.serving.__main__"

USER 1000:1000
WORKDIR /var/lib/wolt-jupyter
EXPOSE 8080 8081
HEALTHCHECK --interval=10s --timeout=2s CMD ["/opt/venv/bin/python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/v2/health/live', timeout=2).status != 200)"]
CMD ["python", "-m", "wolt_jupyter.serving", "--spec", "/etc/wolt-jupyter/spec.yaml", "--host", "0.0.0.0", "--port", "8080", "--grpc-port", "8081", "--drain-seconds", "5"]
