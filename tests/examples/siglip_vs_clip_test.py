"""Smoke test of examples/siglip_vs_clip.py (full run: `make experiments`)."""

import os

import pytest

from tests.examples.experiment_runner import run_quick


@pytest.mark.skipif(not os.path.exists("/usr/share/wordnet/data.noun"),
                    reason="Debian's wordnet-base is not installed")
def test_quick_run_trains_both_losses_and_learns_siglip_bias(tmp_path):
    record, table = run_quick("siglip_vs_clip", tmp_path)
    batches = record["config"]["batches"]
    assert {(r["loss"], r["batch"]) for r in record["runs"].values()} == {
        (name, batch) for name in ("SigLIP", "CLIP") for batch in batches}
    for run in record["runs"].values():
        assert 0.0 <= run["recall_at_1"] <= run["recall_at_5"] <= 1.0
        # Every run of a batch size sees the same pairs; the temperature trains.
        assert run["pairs_per_epoch"] == run["steps_per_epoch"] * run["batch"] > 0
        assert run["final_temperature"] != pytest.approx(
            0.1 if run["loss"] == "SigLIP" else 0.07, abs=1e-6)
        if run["loss"] == "SigLIP":
            # The learnable bias receives gradients: it leaves its initial -10.
            assert run["final_bias"] != pytest.approx(-10.0, abs=1e-6)
    assert "Expected (Zhai et al." in table
