"""Ground truth from a notebook: %wolt_feedback / wolt_jupyter.feedback by deployment name or URL, joined by
request id to what %wolt_predict answered, on a real local deployment."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from IPython.core.error import UsageError

FEATURES = ["f0", "f1", "f2"]


@pytest.fixture
def deployed(shell, wolt_home):
    from sklearn.linear_model import LinearRegression

    import wolt_jupyter

    X = pd.DataFrame(np.random.default_rng(0).normal(size=(40, 3)), columns=FEATURES)
    wolt_jupyter.register(LinearRegression().fit(X, X.sum(axis=1)), name="fb", input_example=X.head(2))
    shell.run_line_magic("wolt_deploy", "fb --model models:/fb/1")
    yield X
    wolt_jupyter.undeploy("fb")


def test_feedback_by_name_joins_every_request_id(shell, deployed) -> None:
    X = deployed
    shell.user_ns["rows"] = X
    answers = shell.run_line_magic("wolt_predict", "fb rows --per-row")
    assert answers["id"].is_unique and len(answers) == len(X)  # the ids feedback joins on
    truth = X.sum(axis=1) + 0.5
    shell.user_ns["truth"] = truth
    shell.user_ns["answers"] = answers

    result = shell.run_line_magic("wolt_feedback", "fb truth --ids answers")
    assert result.stored == len(X) and result.deployment == "fb"
    assert "Feedback" in result._repr_html_() and "40 request ids" in repr(result)

    log = shell.run_line_magic("wolt_responses", "fb")
    joined = log.set_index("id")["ground_truth"]
    assert joined.notna().all() and len(joined) == len(X)
    expected = pd.Series(truth.to_numpy(), index=answers["id"].to_numpy())
    assert np.allclose(joined.loc[expected.index].astype(float), expected)


def test_feedback_python_api_takes_a_series_by_id_a_frame_or_the_url(shell, deployed) -> None:
    import wolt_jupyter

    X = deployed
    shell.user_ns["rows"] = X.head(6)
    answers = shell.run_line_magic("wolt_predict", "fb rows --per-row")
    by_id = pd.Series([1.0, 2.0], index=answers["id"].iloc[:2])
    assert wolt_jupyter.feedback("fb", by_id).stored == 2
    frame = pd.DataFrame({"id": answers["id"].iloc[2:4], "label": [3.0, np.nan]})
    out = wolt_jupyter.feedback("fb", frame)
    assert out.stored == 1 and out.skipped_missing == 1
    url = wolt_jupyter.get_deployment("fb").url
    assert wolt_jupyter.feedback(url, pd.Series([5.0], index=answers["id"].iloc[4:5])).stored == 1
    log = wolt_jupyter.read_responses("fb").set_index("id")["ground_truth"]
    assert log.loc[answers["id"].iloc[4]] == 5.0 and log.loc[answers["id"].iloc[0]] == 1.0
    # the whole 6-row request as one: one id, one label per row
    shell.user_ns["rows"] = X.head(3)
    batch = shell.run_line_magic("wolt_predict", "fb rows")
    assert batch["id"].nunique() == 1
    assert wolt_jupyter.feedback("fb", pd.Series([1.0, 2.0, 3.0], index=batch.index), ids=batch).stored == 1


def test_feedback_bad_input_is_a_usage_error(shell, deployed) -> None:
    shell.user_ns["frame"] = pd.DataFrame({"id": ["a"], "x": [1], "z": [2]})
    with pytest.raises(UsageError, match="--label-column"):
        shell.run_line_magic("wolt_feedback", "fb frame")
    with pytest.raises(UsageError, match="no variable"):
        shell.run_line_magic("wolt_feedback", "fb nothing_here")
    from wolt_jupyter.errors import InvalidArgument
    from wolt_jupyter.responses import add_feedback

    with pytest.raises(InvalidArgument, match=r"wolt_jupyter\.feedback"):
        add_feedback("http://127.0.0.1:1", [{"id": "a", "ground_truth": 1}])
