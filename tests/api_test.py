"""The public API is drawn in one place: the export decorator's registry, the
`__all__` of each subpackage and docs/api.md agree; names that left the public
set still work for one release, with a DeprecationWarning naming their new
place; the shared argument checks say what they check; and the example of
docs/new_loss.md computes, on 2 replicas, the loss and gradients of one device."""

import importlib
import pathlib
import re
import warnings

import numpy as np
import pytest
import tensorflow as tf

import keras_contrast
import keras_contrast.cli  # noqa: F401  (records the CLI's exports, if any)
from keras_contrast.api_export import exported_symbols
from keras_contrast.checks import check_positive_int
from keras_contrast.checks import check_unit_interval
from tests import test_case

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Subpackages whose `__all__` and decorators must agree exactly.
CONFORMING = (
    "keras_contrast.callbacks",
    "keras_contrast.cli",
    "keras_contrast.data",
    "keras_contrast.distribute",
    "keras_contrast.evaluation",
    "keras_contrast.export",
    "keras_contrast.layers",
    "keras_contrast.losses",
    "keras_contrast.models",
    "keras_contrast.normalization",
    "keras_contrast.optimizers",
    "keras_contrast.training",
)
# Every name that left the public set: (module, old name, where it lives now).
DEPRECATED_ALIASES = (
    ("keras_contrast.data", "FASHION_MNIST_FILES", "keras_contrast.data.fashion_mnist.FILES"),
    ("keras_contrast.data", "parse_wordnet_data", "keras_contrast.data.wordnet.parse_wordnet_data"),
    ("keras_contrast.data", "read_idx", "keras_contrast.data.fashion_mnist.read_idx"),
    ("keras_contrast.layers", "effective_momentum",
     "keras_contrast.layers.statistics.effective_momentum"),
    ("keras_contrast.layers", "statistics_frozen",
     "keras_contrast.layers.statistics.statistics_frozen"),
    ("keras_contrast.models", "sincos_position_embedding",
     "keras_contrast.models.vit.sincos_position_embedding"),
    ("keras_contrast.normalization", "KINDS", "keras_contrast.normalization.convert.KINDS"),
    ("keras_contrast.normalization", "frozen_statistics", "keras_contrast.layers.frozen_statistics"),
    ("keras_contrast.training", "momentum_copy", "keras_contrast.training.momentum.momentum_copy"),
    ("keras_contrast.training", "resolve_gradient_norm_groups",
     "keras_contrast.training.step.resolve_gradient_norm_groups"),
)


def decorated_names(module_name):
    """Names the registry exports directly under `module_name`."""
    return {
        path.rpartition(".")[2]
        for path in exported_symbols()
        if path.rpartition(".")[0] == module_name
    }


def exported_names(module_name):
    return set(getattr(importlib.import_module(module_name), "__all__", ()))


def disagreement(module_name):
    """What keeps `__all__` and the decorators of `module_name` apart."""
    module = importlib.import_module(module_name)
    problems = []
    if not hasattr(module, "__all__"):
        problems.append("no __all__")
    undecorated = sorted(exported_names(module_name) - decorated_names(module_name))
    unlisted = sorted(decorated_names(module_name) - exported_names(module_name))
    if undecorated:
        problems.append(f"in __all__ without the export decorator: {undecorated}")
    if unlisted:
        problems.append(f"decorated but missing from __all__: {unlisted}")
    return problems


def resolve(path):
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize("module_name", CONFORMING)
def test_all_lists_exactly_the_decorated_names(module_name):
    assert not disagreement(module_name), f"{module_name}: " + "; ".join(
        disagreement(module_name))


def test_every_registered_module_is_checked():
    modules = {path.rpartition(".")[0] for path in exported_symbols()}
    assert modules <= set(CONFORMING)
    # Every subpackage the package imports is one of them.
    subpackages = {f"keras_contrast.{name}" for name in keras_contrast.__all__
                   if not name.startswith("__")}
    assert subpackages <= set(CONFORMING)


def test_every_decorated_path_imports_to_the_decorated_object():
    symbols = exported_symbols()
    assert len(symbols) >= 70
    for path, obj in symbols.items():
        assert resolve(path) is obj, path


def test_public_names_import_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for module_name in CONFORMING:
            module = importlib.import_module(module_name)
            for name in module.__all__:
                getattr(module, name)


def test_classes_with_a_config_are_registered_for_serialization():
    import keras

    for path, obj in exported_symbols().items():
        if isinstance(obj, type) and hasattr(obj, "get_config"):
            registered = keras.saving.get_registered_object(f"keras_contrast>{obj.__name__}")
            assert registered is obj, path


def test_the_alias_list_is_complete():
    listed = {(module, name) for module, name, _ in DEPRECATED_ALIASES}
    declared = {
        (module_name, name)
        for module_name in CONFORMING
        for name in getattr(importlib.import_module(module_name), "_DEPRECATED", {})
    }
    assert listed == declared


@pytest.mark.parametrize("module_name, name, new_path", DEPRECATED_ALIASES)
def test_deprecated_alias_warns_with_the_new_place_and_returns_the_same_object(
        module_name, name, new_path):
    module = importlib.import_module(module_name)
    assert name not in module.__all__
    internal = "" if new_path in exported_symbols() else " (internal)"
    expected = (
        f"`{module_name}.{name}` is deprecated and will be removed in the next release; "
        f"use `{new_path}`{internal} instead."
    )
    with pytest.warns(DeprecationWarning) as caught:
        obj = getattr(module, name)
    assert [str(w.message) for w in caught] == [expected]
    assert obj is resolve(new_path)
    with pytest.warns(DeprecationWarning, match=re.escape(new_path)):
        namespace = {}
        exec(f"from {module_name} import {name} as alias", namespace)
    assert namespace["alias"] is obj


def test_unknown_names_still_raise_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        keras_contrast.data.not_a_name  # noqa: B018


# docs/api.md


def test_api_reference_is_current():
    expected = test_case.load_tool("generate_api").render()
    current = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    assert current == expected, "docs/api.md is out of date: run `python tools/generate_api.py`"


def test_api_reference_lists_every_public_name_with_its_summary():
    text = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    for path, obj in exported_symbols().items():
        module, _, name = path.rpartition(".")
        section = text.split(f"\n## {module}\n", 1)[1].split("\n## ", 1)[0]
        assert f"### `{name}` (" in section, path
    # A spot check against the docstring as written.
    section = text.split("\n## keras_contrast.distribute\n", 1)[1]
    assert ("### `all_gather` (function)\n\n```python\nall_gather(x, axis=0)\n```\n\n"
            "Concatenates `x` from every replica, in replica order, with gradients.") in section
    assert "### `LARS` (optimizer)" in text
    assert "NORMALIZATIONS = ('batch', 'sync', 'ghost', 'renorm', 'frozen', 'split', " in text


# keras_contrast/checks.py


@pytest.mark.parametrize("value", [1, 7, 10**12])
def test_positive_int_accepts_python_ints(value):
    assert check_positive_int(value, "n") is value


@pytest.mark.parametrize("value", [0, -3, 2.0, True, "4", None, np.int64(3)])
def test_positive_int_rejects_with_the_argument_name(value):
    with pytest.raises(ValueError) as error:
        check_positive_int(value, "batch_size")
    assert str(error.value) == f"`batch_size` must be an int > 0, got {value!r}."


def test_positive_int_says_what_the_site_expects_and_may_take_numpy_ints():
    assert check_positive_int(np.int32(5), "num_batches", numpy_ints=True) == 5
    for value in (np.int32(0), np.bool_(True), 1.0):
        with pytest.raises(ValueError) as error:
            check_positive_int(value, "num_batches", "an int >= 1", numpy_ints=True)
        assert str(error.value) == f"`num_batches` must be an int >= 1, got {value!r}."


@pytest.mark.parametrize("value", [0, 0.0, 0.5, 1, 1.0])
def test_unit_interval_accepts_the_closed_interval(value):
    assert check_unit_interval(value, "momentum") == value
    assert check_unit_interval(value, "momentum", number=True) == value


@pytest.mark.parametrize("value", [-0.1, 1.01, 2])
def test_unit_interval_rejects_outside_values(value):
    with pytest.raises(ValueError) as error:
        check_unit_interval(value, "final_momentum")
    assert str(error.value) == f"`final_momentum` must lie in [0, 1], got {value!r}."
    with pytest.raises(ValueError) as error:
        check_unit_interval(value, "momentum", number=True)
    assert str(error.value) == f"`momentum` must be a number in [0, 1], got {value!r}."


@pytest.mark.parametrize("value", [True, "0.5", float("nan"), None])
def test_unit_interval_with_number_rejects_non_numbers(value):
    with pytest.raises(ValueError) as error:
        check_unit_interval(value, "renorm_momentum", number=True)
    assert str(error.value) == f"`renorm_momentum` must be a number in [0, 1], got {value!r}."


# docs/new_loss.md


def new_loss_example():
    """The namespace the python block of docs/new_loss.md defines."""
    text = (ROOT / "docs" / "new_loss.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^```python\n(.*?)^```", text, re.M | re.S)
    assert len(blocks) == 1
    assert 15 <= len(blocks[0].strip().splitlines()) <= 30
    namespace = {"__name__": "new_loss_example"}
    exec(compile(blocks[0], str(ROOT / "docs" / "new_loss.md"), "exec"), namespace)
    return namespace


def reference_info_nce(y_pred, temperature):
    """Per-sample InfoNCE of view 1 against view 2 of the whole batch (float64)."""
    z = y_pred / np.linalg.norm(y_pred, axis=-1, keepdims=True)
    logits = z[:, 0] @ z[:, 1].T / temperature
    top = logits.max(axis=1, keepdims=True)
    log_sum_exp = np.log(np.exp(logits - top).sum(axis=1)) + top[:, 0]
    return log_sum_exp - np.diag(logits)


def reference_mean_gradient(y_pred, temperature, step=1e-6):
    """Central differences of the batch mean of `reference_info_nce`."""
    gradient = np.zeros_like(y_pred)
    for index in np.ndindex(*y_pred.shape):
        up, down = y_pred.copy(), y_pred.copy()
        up[index] += step
        down[index] -= step
        gradient[index] = (reference_info_nce(up, temperature).mean()
                           - reference_info_nce(down, temperature).mean()) / (2 * step)
    return gradient


@pytest.mark.parametrize("sizes", [(4, 4), (3, 5)])
def test_new_loss_example_on_two_replicas_matches_one_device(sizes):
    loss_fn = new_loss_example()["cross_replica_info_nce"]
    temperature = 0.1
    y_pred = np.random.default_rng(16).normal(size=(sum(sizes), 2, 3))
    strategy = test_case.strategy(2)
    global_batch = float(sum(sizes))

    def replica_step(y_local):
        with tf.GradientTape() as tape:
            tape.watch(y_local)
            per_sample = loss_fn(y_local, temperature)
            # This replica's share of the global mean (docs/design.md §3.3).
            share = tf.reduce_sum(per_sample) / global_batch
        return per_sample, tape.gradient(share, y_local)

    @tf.function
    def run(values):
        return strategy.run(replica_step, args=(values,))

    per_sample, gradient = run(test_case.split_per_replica(strategy, y_pred, sizes))
    per_sample = np.concatenate(strategy.experimental_local_results(per_sample))
    gradient = np.concatenate(strategy.experimental_local_results(gradient))
    assert per_sample.dtype == np.float64
    np.testing.assert_allclose(per_sample, reference_info_nce(y_pred, temperature), rtol=1e-5)
    expected = reference_mean_gradient(y_pred, temperature)
    np.testing.assert_allclose(gradient, expected, rtol=1e-5, atol=1e-8 * np.abs(expected).max())
