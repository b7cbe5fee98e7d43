"""The PNG plots of a `train` run and the per-epoch logs they read."""

import csv
import os


def read_history(csv_path, history):
    """The per-epoch logs of the whole run.

    Args:
        csv_path: `CSVLogger`'s file, which a resumed run appends to.
        history: Keras' `History.history` of this process, used when the
            file does not exist or holds no values.

    Returns:
        A dict `{log name: [value per epoch]}` (the `epoch` column and empty
        or `NA` cells left out).
    """
    if not os.path.exists(csv_path):
        return history
    merged = {}
    with open(csv_path, newline="") as handle:
        for row in csv.DictReader(handle):
            for key, value in row.items():
                if key != "epoch" and value not in ("", "NA"):
                    merged.setdefault(key, []).append(float(value))
    return merged or history


def knn_labels(results=None, monitor=None, test_size=None):
    """The legend entries of knn.png, each naming its protocol's sizes.

    Args:
        results: `results.json` of the run (`knn_bank_size`), or `None`.
        monitor: `(bank images, test images)` of the per-epoch `KNNMonitor`,
            or `None` when unknown.
        test_size: images of the whole test split the final accuracies use,
            or `None` when unknown.

    Returns:
        A dict with `monitor`, `final` and `pixels` labels.
    """
    subset = ("a subset of the splits" if monitor is None
              else f"{monitor[0]:,}-image train bank, {monitor[1]:,} test images")
    bank = (results or {}).get("knn_bank_size")
    whole = (f"{bank:,}-image train bank" if bank else "whole train split as bank") + (
        f", all {test_size:,} test images" if test_size else ", whole test split")
    return {"monitor": f"per-epoch monitor ({subset})",
            "final": f"final encoder ({whole})",
            "pixels": "raw pixels (final protocol)"}


def write_plots(out, history, norms, results=None, monitor=None, test_size=None):
    """Writes loss.png, knn.png and grad_norms.png in `out`.

    knn.png shows the per-epoch monitor and the final accuracies with one
    legend entry per protocol: the monitor measures a subset of the splits,
    the final numbers the whole training split as bank and the whole test split.

    Args:
        out: the output folder.
        history: `{log name: [value per epoch]}` (`loss`, `knn_accuracy`).
        norms: `{group: [value per step]}` of `GradientNormMonitor`; empty: no
            grad_norms.png.
        results: `results.json` of the run: adds the final kNN accuracy of the
            encoder and of raw pixels to knn.png.
        monitor: `(bank images, test images)` of the per-epoch monitor.
        test_size: images of the test split of the final accuracies.
    """
    # matplotlib is optional for the library (the `cli` extra): `train`
    # checks it is installed before it starts, and importing the CLI must
    # not need it.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = knn_labels(results, monitor, test_size)
    for key, name, label in (("loss", "loss.png", "training loss"),
                             ("knn_accuracy", "knn.png", "kNN accuracy")):
        values = history.get(key)
        if not values:
            continue
        figure, axis = plt.subplots(figsize=(5.5, 3.4))
        if key == "loss":
            axis.plot(range(1, len(values) + 1), values, marker="o")
        else:
            _plot_knn(axis, values, results, labels)
        _finish(figure, axis, label, os.path.join(out, name))
    if norms:
        figure, axis = plt.subplots(figsize=(6, 3.2))
        for key, values in norms.items():
            axis.plot(values, label=key.split("/")[-1], linewidth=1)
        axis.set_yscale("log")
        axis.set_xlabel("step")
        axis.set_ylabel("gradient max |g|")
        axis.legend()
        figure.tight_layout()
        figure.savefig(os.path.join(out, "grad_norms.png"), dpi=100)
        plt.close(figure)


def _plot_knn(axis, values, results, labels):
    axis.plot(range(1, len(values) + 1), values, marker="o", label=labels["monitor"])
    if results and "knn_accuracy" in results:
        axis.plot([len(values)], [results["knn_accuracy"]], marker="*", markersize=12,
                  linestyle="none", color="tab:green", label=labels["final"])
        if results.get("knn_accuracy_raw_pixels") is not None:
            axis.axhline(results["knn_accuracy_raw_pixels"], color="gray", linestyle="--",
                         label=labels["pixels"])
    axis.set_title("two protocols: per-epoch monitor vs final", fontsize=8)
    axis.legend(fontsize=7)


def _finish(figure, axis, label, path):
    import matplotlib.pyplot as plt  # optional, see write_plots
    from matplotlib.ticker import MaxNLocator

    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.set_xlabel("epoch")
    axis.set_ylabel(label)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
