"""What `keras-contrast train` shows a person: Keras' verbosity chosen by the
terminal, the closing summary, and knn.png's legend naming both protocols."""

import os
import shlex

import pytest

from keras_contrast import cli


class _Stream:
    def __init__(self, tty):
        self.tty = tty

    def isatty(self):
        return self.tty


def test_verbosity_is_a_progress_bar_on_a_terminal_and_one_line_per_epoch_otherwise():
    # Keras' fit: verbose=1 a progress bar (with ETA) redrawn in place, 2 one line per epoch.
    assert cli.fit_verbosity(None, _Stream(True)) == 1
    assert cli.fit_verbosity(None, _Stream(False)) == 2
    assert cli.fit_verbosity(None, object()) == 2  # a stream that cannot tell
    for verbose in (0, 1, 2):  # --verbose given: kept
        assert cli.fit_verbosity(verbose, _Stream(True)) == verbose
        assert cli.fit_verbosity(verbose, _Stream(False)) == verbose
    assert cli.build_parser().parse_args(["train", "--out", "x"]).verbose is None


def test_closing_summary_names_what_the_run_wrote_and_how_to_open_the_logs(tmp_path):
    out = str(tmp_path / "my run")  # a space: the commands shown must quote it
    os.makedirs(os.path.join(out, "saved_model"))
    os.makedirs(os.path.join(out, "logs", "train"))
    for name in ("model.keras", "loss.png", "knn.png", "results.json", "history_0.csv"):
        open(os.path.join(out, name), "w").close()
    lines = cli.closing_summary(out, out, "history_0.csv", "fashion_mnist").splitlines()
    text = "\n".join(lines)
    for name in ("model.keras", "saved_model", "loss.png", "knn.png", "results.json",
                 "history_0.csv"):
        assert os.path.join(out, name) in text, name
    assert "grad_norms.png" not in text  # not written: not listed
    (tensorboard,) = [line for line in lines if "tensorboard --logdir" in line]
    command = shlex.split(tensorboard[tensorboard.index("tensorboard --logdir"):])
    assert command[:3] == ["tensorboard", "--logdir", os.path.join(out, "logs")]
    (evaluate,) = [line for line in lines if "keras-contrast evaluate" in line]
    command = shlex.split(evaluate[evaluate.index("keras-contrast evaluate"):].split(";")[0])
    assert command == ["keras-contrast", "evaluate", out, "--dataset", "fashion_mnist"]
    assert "keras-contrast export" in evaluate


def test_closing_summary_without_logs_or_export(tmp_path):
    out = str(tmp_path)
    open(os.path.join(out, "model.keras"), "w").close()
    text = cli.closing_summary(out, out, "history_0.csv", "wordnet", exportable=False)
    assert "tensorboard" not in text and "keras-contrast export" not in text
    assert os.path.join(out, "model.keras") in text


@pytest.fixture
def saved_figures(monkeypatch):
    """The legend texts of each figure write_plots saves, by file name."""
    from matplotlib.figure import Figure

    legends = {}
    save = Figure.savefig

    def savefig(figure, path, *args, **kwargs):
        legend = figure.axes[0].get_legend()
        legends[os.path.basename(path)] = (
            [text.get_text() for text in legend.get_texts()] if legend else [])
        return save(figure, path, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    return legends


def test_knn_plot_names_the_monitor_and_the_final_protocol(tmp_path, saved_figures):
    history = {"loss": [6.0, 5.0, 4.5], "knn_accuracy": [0.5, 0.6, 0.7]}
    results = {"knn_accuracy": 0.8, "knn_accuracy_raw_pixels": 0.75, "knn_bank_size": 60000}
    cli.write_plots(str(tmp_path), history, {}, results, monitor=(10000, 2000),
                    test_size=10000)
    monitor, final, pixels = saved_figures["knn.png"]
    assert "monitor" in monitor and "10,000" in monitor and "2,000" in monitor
    assert "final" in final and "60,000" in final and "10,000" in final
    assert "2,000" not in final and "60,000" not in monitor
    assert "raw pixels" in pixels and "final" in pixels
    assert (tmp_path / "knn.png").stat().st_size > 1000


def test_knn_plot_of_the_monitor_alone_still_says_it_is_a_subset(tmp_path, saved_figures):
    cli.write_plots(str(tmp_path), {"knn_accuracy": [0.5, 0.6]}, {})
    (monitor,) = saved_figures["knn.png"]
    assert "monitor" in monitor and "subset" in monitor
