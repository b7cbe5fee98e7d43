"""Smoke test of examples/gradcache_equivalence.py (full run: `make experiments`)."""

from tests.examples.experiment_runner import run_quick


def test_quick_run_writes_table_and_plot(tmp_path):
    record, _ = run_quick("gradcache_equivalence", tmp_path)
    difference = record["differences"][0]
    # GradCache is the big batch up to float32 rounding; accumulating the
    # chunks' own losses is a different gradient.
    assert difference["grad_cache"] < 1e-5
    assert difference["accumulation"] > 100 * difference["grad_cache"]
