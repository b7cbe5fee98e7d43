"""Smoke test of examples/dual_encoder_wordnet.py (full run: `make experiments`)."""

import os

import pytest

from tests.examples.experiment_runner import run_quick


@pytest.mark.skipif(not os.path.exists("/usr/share/wordnet/data.noun"),
                    reason="Debian's wordnet-base is not installed")
def test_quick_run_writes_table_and_plot(tmp_path):
    record, _ = run_quick("dual_encoder_wordnet", tmp_path)
    assert len(record["runs"]) == 4
    for run in record["runs"].values():
        assert 0.0 <= run["recall_at_1"] <= run["recall_at_5"] <= 1.0
