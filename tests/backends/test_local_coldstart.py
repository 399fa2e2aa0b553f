"""A local deploy hands the runtime its models on disk: the pinned versions are copied into the runtime's
model cache before it starts (so it never opens the registry), and the served numbers are MLflow's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest


@pytest.mark.usefixtures("undeploy_all")
def test_three_variant_deploy_serves_from_the_model_cache(
    wolt_home: Path, models: dict, rows: pd.DataFrame
) -> None:
    import mlflow.pyfunc

    from wolt_jupyter import deployments
    from wolt_jupyter.serving.flavors import direct_loadable
    from wolt_jupyter.serving.models import artifact_location, model_cache_dir

    d = deployments.deploy("cold", models["champion"], ab=[f"{models['v2']}=10"], shadow=[models["v3"]])
    assert d.status == "ready"
    cache = model_cache_dir(wolt_home, "cold")
    for n in (1, 2, 3):
        copied = cache / f"eta-v{n}"
        source = Path(artifact_location(f"models:/eta/{n}"))
        assert source.is_dir(), "an embedded store keeps the version's files on this disk"
        assert (copied / "MLmodel").read_text() == (source / "MLmodel").read_text()
        assert direct_loadable(copied)  # the runtime loads these without MLflow
    # one request: whichever live variant answers it, its numbers are MLflow's for that version
    served = deployments.predict("cold", rows)
    answered = served["variant"].iloc[0]
    version = {"main": models["v1"], "challenger": models["v2"]}[answered]
    [output] = [c for c in served.columns if c not in ("variant", "id")]
    expected = np.asarray(mlflow.pyfunc.load_model(version).predict(rows)).reshape(len(rows))
    np.testing.assert_array_equal(served[output].to_numpy(), expected)
