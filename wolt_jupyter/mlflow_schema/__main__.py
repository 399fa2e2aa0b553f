"""``python -m wolt_jupyter.mlflow_schema``: keep the installed MLflow's schema beside the package."""

from wolt_jupyter.mlflow_schema import main

main()
