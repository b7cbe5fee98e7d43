"""Turns a `keras-contrast train` output folder into a shipped preset.

    python tools/make_preset.py RUN_DIR NAME --description "..." \
        [--goals '{"knn_accuracy": 0.86}'] [--references FILE.json] [--compute-note "..."]

Reads `RUN_DIR/model.keras`, `results.json` and `history_0.csv`, scores the
model with the protocol of `keras-contrast evaluate` (image models: weighted
cosine kNN, k = 200, τ = 0.1, the whole training split as the bank, and a
30-epoch linear probe, on the whole test split, next to raw pixels; the dual
encoder: recall@1/5 on the WordNet pairs its run held out), scores it again
on the subset shipped for tests (`tests/data/fashion_mnist_subset.npz`),
and writes `keras_contrast/presets/NAME/` with `save_to_preset`: config,
weights, `metadata.json` (task, data, metrics, command, compute) and a
model card generated from those numbers.

    python tools/make_preset.py --refresh NAME [--references FILE.json] \
        [--compute-note "..."] [--limits "..."]

rewrites the shipped preset NAME from its own folder: the same model and
scores, with the given fields of its metadata replaced, saved again with
the current `save_to_preset` (new sha256) and its card rendered again.
"""

import argparse
import csv
import datetime
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_contrast import evaluation  # noqa: E402
from keras_contrast import models  # noqa: E402
from keras_contrast.models import preset_files  # noqa: E402

SUBSET = os.path.join(ROOT, "tests", "data", "fashion_mnist_subset.npz")
LICENCES = {
    "fashion_mnist": "Fashion-MNIST (Zalando Research, Xiao et al. 2017): MIT licence.",
    "wordnet": "WordNet 3.0 (Princeton University): the WordNet licence, which permits use, "
               "copying, modification and distribution with its copyright notice kept.",
}
PROBE_EPOCHS = 30  # `keras-contrast evaluate`'s default


def subset_splits():
    """The shipped test subset: bank = its 2,000 training images, test = its 1,000."""
    subset = np.load(SUBSET)
    return ((subset["x_train"][..., None] / 255.0, subset["y_train"]),
            (subset["x_test"][..., None] / 255.0, subset["y_test"]))


def image_metrics(encoder):
    from keras_contrast.data import load_fashion_mnist

    (x, y), (xt, yt) = load_fashion_mnist()
    bank, test = (x[..., None] / 255.0, y), (xt[..., None] / 255.0, yt)
    full = {"knn_accuracy": evaluation.knn_accuracy(encoder, bank, test, k=200),
            "linear_probe_accuracy": evaluation.linear_probe(encoder, bank, test,
                                                             epochs=PROBE_EPOCHS)[0],
            "raw_pixels_knn_accuracy": evaluation.knn_accuracy(None, bank, test, k=200),
            "raw_pixels_linear_probe_accuracy": evaluation.linear_probe(
                None, bank, test, epochs=PROBE_EPOCHS)[0]}
    sbank, stest = subset_splits()
    subset = {"knn_accuracy": evaluation.knn_accuracy(encoder, sbank, stest, k=200),
              "linear_probe_accuracy": evaluation.linear_probe(encoder, sbank, stest,
                                                               epochs=PROBE_EPOCHS)[0],
              "raw_pixels_knn_accuracy": evaluation.knn_accuracy(None, sbank, stest, k=200)}
    return full, subset


def dual_metrics(model, results):
    from keras_contrast.cli._datasets import wordnet_split
    from keras_contrast.cli._dual import held_out_recall
    from keras_contrast.cli._dual import tower_vocabulary

    _, held_out = wordnet_split(results.get("train_size"), results.get("seed", 0))
    recall = held_out_recall(model.encode_a, model.encode_b, held_out, tower_vocabulary(model))
    return {"recall_at_1": recall[1], "recall_at_5": recall[5], "held_out_pairs": len(held_out),
            "chance_at_1": 1.0 / len(held_out)}, None


def read_history(run_dir):
    path = os.path.join(run_dir, "history_0.csv")
    if not os.path.exists(path):
        return []
    with open(path) as handle:
        return [{k: (float(v) if v not in ("", "NA") else None) for k, v in row.items()}
                for row in csv.DictReader(handle)]


def percent(value):
    return "—" if value is None else f"{100 * value:.2f} %"


def card(name, metadata):
    m = metadata["metrics"]
    lines = [f"# {name}", "", metadata["description"], "",
             "```python", "from keras_contrast.models import from_preset",
             f'model = from_preset("{name}")  # the trained weights, from the package itself',
             "```", ""]
    if metadata["task"] == "image":
        lines += [
            "## Accuracy", "",
            "Full Fashion-MNIST test set (10,000 images); kNN: weighted cosine, k = 200, "
            "τ = 0.1, the 60,000 training images as the bank; linear probe: "
            f"{PROBE_EPOCHS} epochs of Adam on frozen, standardised features "
            f"(`keras-contrast evaluate --preset {name} --dataset fashion_mnist` reproduces "
            "both).", "",
            "| | kNN | linear probe |", "|---|---|---|",
            f"| this encoder | {percent(m['knn_accuracy'])} | "
            f"{percent(m['linear_probe_accuracy'])} |",
            f"| raw pixels | {percent(m['raw_pixels_knn_accuracy'])} | "
            f"{percent(m['raw_pixels_linear_probe_accuracy'])} |"]
        for reference in metadata.get("references", []):
            lines.append(f"| {reference['name']} | {percent(reference.get('knn_accuracy'))} | "
                         f"{percent(reference.get('linear_probe_accuracy'))} |")
        lines.append("")
        for key, goal in sorted(metadata.get("goals", {}).items()):
            gap = m[key] - goal
            lines.append(f"- Goal {key} ≥ {percent(goal)}: "
                         f"{'reached' if gap >= 0 else 'not reached'} "
                         f"({100 * gap:+.2f} points).")
        s = metadata["subset_metrics"]
        lines += ["", f"On the subset shipped for tests (`tests/data/fashion_mnist_subset.npz`: "
                  "bank = its 2,000 training images, its 1,000 test images): kNN "
                  f"{percent(s['knn_accuracy'])} (raw pixels {percent(s['raw_pixels_knn_accuracy'])}), "
                  f"linear probe {percent(s['linear_probe_accuracy'])}; "
                  "`tests/models/shipped_presets_test.py` reproduces the kNN within 0.5 points.", ""]
    else:
        lines += ["## Retrieval", "",
                  f"Held-out WordNet pairs ({m['held_out_pairs']}, synsets the training pairs "
                  f"do not hold): recall@1 {percent(m['recall_at_1'])}, recall@5 "
                  f"{percent(m['recall_at_5'])} (chance@1 {percent(m['chance_at_1'])}); "
                  f"`keras-contrast evaluate --preset {name} --dataset wordnet` reproduces "
                  "them.", ""]
    curve = metadata.get("curve", [])
    if curve and metadata["task"] != "image":
        lines += ["## Recall per epoch", "",
                  "Held-out recall after each epoch (the pairs above), and the training loss:",
                  "", "| epoch | recall@1 | recall@5 | loss |", "|---|---|---|---|"]
        lines += [f"| {row['epoch'] + 1} | {percent(row.get('recall_at_1'))} | "
                  f"{percent(row.get('recall_at_5'))} | {row['loss']:.4f} |" for row in curve]
        lines.append("")
    elif curve:
        lines += ["## Accuracy per epoch", "",
                  "kNN monitored during training (bank: the first 10,000 training images; "
                  "the first 2,000 test images), and the training loss:", "",
                  "| epoch | kNN monitor | loss |", "|---|---|---|"]
        lines += [f"| {row['epoch'] + 1} | {percent(row.get('knn_accuracy'))} | "
                  f"{row['loss']:.4f} |" for row in curve]
        lines.append("")
    c = metadata["compute"]
    lines += ["## Training", "",
              f"- Command: `{metadata['command']}`",
              f"- Compute: {c['train_seconds'] / 60:.1f} min of training on {c['machine']}"
              + (f"; {c['note']}" if c.get("note") else "") + ".",
              f"- Weights: {metadata['weight_bytes'] / 2**20:.2f} MiB, "
              f"{metadata['parameters']:,} parameters (all variables of the model, heads "
              "included).",
              "", "## Data and licence", "", LICENCES[metadata["data"]], "",
              "## Limits", "", metadata.get("limits", "Trained on one small dataset on CPU; a "
                                            "starting point for fine-tuning, not a general "
                                            "feature extractor."), ""]
    return "\n".join(lines)


def write(model, name, metadata):
    """Saves `model` as the shipped preset `name` with `metadata`, and its card."""
    folder = os.path.join(preset_files.SHIPPED_DIR, name)
    preset_files.save_folder(model, folder, metadata=metadata, card="(written below)\n",
                             overwrite=True)
    stored = json.load(open(os.path.join(folder, preset_files.METADATA_FILE)))
    stored["weight_bytes"] = stored["weights"][preset_files.WEIGHTS_FILE]["bytes"]
    with open(os.path.join(folder, preset_files.CARD_FILE), "w") as handle:
        handle.write(card(name, stored))
    return folder


def refresh(name, references=None, compute_note=None, limits=None):
    """Saves the shipped preset `name` again, with these metadata fields replaced."""
    folder = os.path.join(preset_files.SHIPPED_DIR, name)
    metadata = preset_files.read_metadata(folder)
    for key in ("format_version", "min_library_version", "weights", "class_name",
                "keras_version"):
        metadata.pop(key, None)
    if references is not None:
        metadata["references"] = json.load(open(references))
    if compute_note is not None:
        metadata["compute"]["note"] = compute_note
    if limits is not None:
        metadata["limits"] = limits
    return write(models.from_preset(name), name, metadata)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", nargs="?")
    parser.add_argument("name", nargs="?")
    parser.add_argument("--refresh", metavar="NAME", default=None)
    parser.add_argument("--description")
    parser.add_argument("--goals", default="{}", help="JSON {metric: goal}")
    parser.add_argument("--references", default=None,
                        help="JSON file: [{name, knn_accuracy, linear_probe_accuracy, ...}]")
    parser.add_argument("--compute-note", default="")
    parser.add_argument("--limits", default=None)
    args = parser.parse_args(argv)
    if args.refresh:
        print(refresh(args.refresh, args.references,
                      None if args.compute_note == "" else args.compute_note, args.limits))
        return 0
    if not (args.run_dir and args.name and args.description):
        parser.error("RUN_DIR, NAME and --description are needed (or --refresh NAME)")
    results = json.load(open(os.path.join(args.run_dir, "results.json")))
    model = keras.models.load_model(os.path.join(args.run_dir, "model.keras"), safe_mode=True)
    dual = isinstance(model, models.DualEncoder)
    metrics, subset = dual_metrics(model, results) if dual else image_metrics(model.encoder)
    history = read_history(args.run_dir)
    metadata = {
        "description": args.description, "task": "retrieval" if dual else "image",
        "data": "wordnet" if dual else "fashion_mnist", "licence": None,
        "metrics": metrics, "goals": json.loads(args.goals),
        "references": json.load(open(args.references)) if args.references else [],
        "curve": [dict({"epoch": int(r["epoch"]), "loss": r["loss"]},
                       **({"recall_at_1": r.get("recall_at_1"),
                           "recall_at_5": r.get("recall_at_5")} if dual
                          else {"knn_accuracy": r.get("knn_accuracy")})) for r in history],
        "command": results["command"].replace(os.path.join(ROOT, "keras_contrast/__main__.py"),
                                              "keras-contrast"),
        "compute": {"train_seconds": results["train_seconds"], "note": args.compute_note,
                    "machine": "2 CPU cores (no GPU)"},
        "date": datetime.date.today().isoformat(),
        "parameters": int(sum(np.prod(v.shape) for v in model.weights)),
    }
    metadata["licence"] = LICENCES[metadata["data"]]
    if subset is not None:
        metadata["subset_metrics"] = subset
    if dual:
        metadata["split"] = {"seed": results.get("seed", 0), "train_size": results.get("train_size")}
    if args.limits:
        metadata["limits"] = args.limits
    folder = write(model, args.name, metadata)
    print(json.dumps({"folder": folder, "metrics": metrics, "subset": subset}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
