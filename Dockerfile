# The serving runtime image the `kubernetes` target deploys: the same runtime and router as local deployments.
#   docker build -t wolt-jupyter-runtime:0.1.0 .
# The pod gets its pinned spec from a ConfigMap at /etc/wolt-jupyter/spec.yaml and MLFLOW_TRACKING_URI from env.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    WOLT_JUPYTER_HOME=/var/lib/wolt-jupyter

RUN useradd --uid 1000 --user-group --no-create-home --home-dir /var/lib/wolt-jupyter wolt \
 && mkdir -p /var/lib/wolt-jupyter /etc/wolt-jupyter \
 && chown wolt:wolt /var/lib/wolt-jupyter

WORKDIR /opt/wolt-jupyter
COPY pyproject.toml README.md ./
COPY wolt_jupyter ./wolt_jupyter
RUN pip install .

USER 1000
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=2s CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/v2/health/live').status != 200)"
CMD ["python", "-m", "wolt_jupyter.serving", "--spec", "/etc/wolt-jupyter/spec.yaml", "--host", "0.0.0.0", "--port", "8080"]
