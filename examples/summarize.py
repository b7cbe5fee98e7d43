"""Writes examples/README.md from the experiments' outputs in
examples/results/ (run by `make experiments` after the experiments), so
the tables there are exactly what the full runs printed."""

import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
EXPERIMENTS = (
    ("bn_leak", "SimCLR §2.2 (docs/design.md §4): the BN leak against the per-replica batch"),
    ("bn_leak_moco", "MoCo §3.3 (docs/design.md §4): the BN leak and Shuffle BN"),
    ("dcl_vs_infonce", "DCL paper: decoupling helps small batches"),
    ("gradcache_equivalence", "GradCache vs naive accumulation (docs/design.md §6): the "
                              "big-batch objective"),
    ("mocov3_stability", "MoCo v3 (docs/design.md §5): gradient spikes and the frozen patch "
                         "projection"),
    ("precise_bn", "docs/design.md §4: stale BN statistics and Precise BN"),
    ("dual_encoder_wordnet", "CLIP-style dual encoder: temperature and replicas"),
    ("siglip_vs_clip", "SigLIP paper: sigmoid vs softmax loss across batch sizes"),
)

INTRO = """# Experiments: the source articles' claims on real data

Each script reproduces one finding on this repository's CPU machines (2 cores, offline data:
Fashion-MNIST from Debian's `dataset-fashion-mnist`, WordNet from `wordnet-base`) and writes a
Markdown table, a JSON record and a PNG to `examples/results/`. `make experiments` runs them all
({total})
and regenerates this file with `python examples/summarize.py`; each script also takes `--quick`
(about a minute, used by its smoke test in CI: `tests/examples/`).

These are small encoders trained for minutes, not the papers' hundreds of epochs: an effect that
does not show here is reported as not showing. Below, each section is the full run's own output
(command and date in its first line).
"""


def total_minutes():
    """The full runs' summed wall time, from their JSON records."""
    minutes = []
    for name, _ in EXPERIMENTS:
        record = os.path.join(HERE, "results", f"{name}.json")
        if os.path.exists(record):
            with open(record) as handle:
                minutes.append(json.load(handle)["minutes"])
    if not minutes:
        return "not run yet"
    return f"the runs below took {sum(minutes):.0f} minutes in all on 2 cores"


def main():
    parts = [INTRO.format(total=total_minutes())]
    for name, claim in EXPERIMENTS:
        table = os.path.join(HERE, "results", f"{name}.md")
        parts.append(f"## `{name}.py` — {claim}\n")
        if not os.path.exists(table):
            parts.append("Not run yet (`python examples/%s.py`).\n" % name)
            continue
        with open(table) as handle:
            body = handle.read().split("\n", 1)[1].strip()  # drop the script's own title
        parts.append(body + "\n")
        if os.path.exists(os.path.join(HERE, "results", f"{name}.png")):
            parts.append(f"![{name}](results/{name}.png)\n")
    with open(os.path.join(HERE, "README.md"), "w") as handle:
        handle.write("\n".join(parts))


if __name__ == "__main__":
    main()
