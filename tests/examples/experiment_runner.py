"""Runs an examples/ experiment with `--quick` in a subprocess (the scripts
configure their own logical CPUs) and checks what it wrote."""

import json
import os
import subprocess
import sys

from tests import test_case


def run_quick(name, tmp_path, timeout=600):
    """Runs `examples/<name>.py --quick --out tmp_path`; returns its JSON
    record and Markdown table after checking the table, the JSON and the
    PNG exist."""
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=test_case.ROOT)
    script = os.path.join(test_case.ROOT, "examples", f"{name}.py")
    completed = subprocess.run([sys.executable, script, "--quick", "--out", str(tmp_path)],
                               capture_output=True, text=True, timeout=timeout, env=env)
    assert completed.returncode == 0, completed.stderr[-5000:]
    for extension in ("md", "json", "png"):
        path = tmp_path / f"{name}.{extension}"
        assert path.exists() and path.stat().st_size > 0, path
    table = (tmp_path / f"{name}.md").read_text()
    assert "quick run" in table and "|---|" in table
    record = json.loads((tmp_path / f"{name}.json").read_text())
    assert record["quick"] is True
    return record, table
