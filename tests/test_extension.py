"""Loading the extension must stay fast: no MLflow, scikit-learn, pandas or matplotlib at %load_ext."""

import json
import subprocess
import sys

HEAVY = ("mlflow", "sklearn", "pandas", "matplotlib")


def test_load_ext_imports_no_heavy_library() -> None:
    code = (
        "import sys, json\n"
        "from IPython.core.interactiveshell import InteractiveShell\n"
        "ip = InteractiveShell.instance()\n"
        "ip.run_line_magic('load_ext', 'wolt_jupyter')\n"
        "import wolt_jupyter\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
        "print(json.dumps(sorted(ip.magics_manager.magics['line'])))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded, line_magics = (json.loads(x) for x in out.strip().splitlines()[-2:])
    assert loaded == []
    assert {"wolt_config", "wolt_log", "wolt_register", "wolt_models"} <= set(line_magics)


def test_unload_removes_the_magics(shell) -> None:
    assert "wolt_experiment" in shell.magics_manager.magics["cell"]
    shell.run_line_magic("unload_ext", "wolt_jupyter")
    assert "wolt_experiment" not in shell.magics_manager.magics["cell"]
    assert "wolt_models" not in shell.magics_manager.magics["line"]
    shell.run_line_magic("load_ext", "wolt_jupyter")
    assert "wolt_models" in shell.magics_manager.magics["line"]


def test_public_api_is_lazy_but_complete() -> None:
    import wolt_jupyter

    for name in wolt_jupyter.__all__:
        assert getattr(wolt_jupyter, name) is not None


def test_response_log_reader_has_one_public_name(wolt_home) -> None:
    import wolt_jupyter
    from wolt_jupyter import deployments

    frame = wolt_jupyter.read_responses("never-deployed", since="1h")
    assert frame.empty and {"id", "variant", "shadow", "latency_ms"} <= set(frame.columns)
    assert wolt_jupyter.read_responses is deployments.read_responses
    assert wolt_jupyter.responses.__name__ == "wolt_jupyter.responses"  # the package: the response log
    assert not callable(wolt_jupyter.responses) and callable(wolt_jupyter.responses.add_feedback)
