"""Preset folders: a model's Keras config, its weights, their metadata and
a model card.

A preset folder holds

- `config.json`: `keras.saving.serialize_keras_object(model)`, with the
  model's build config, so deserialising it builds the model, and without
  its compile config: a preset is an architecture and its variables, and
  whoever loads it compiles it for their own task;
- `model.weights.h5`: the model's variables (`save_weights` of the model
  uncompiled: no optimizer state);
- `metadata.json`: the preset format version, the minimum library version,
  the sha256 and size of every weight file, and what the saver adds (task,
  data, metrics, command, compute);
- `README.md`: the model card.

keras-hub's presets are folders too, but its loader builds keras-hub
backbones and tokenizers only; a keras_contrast model is one Keras object
whose config already says how to rebuild it, so the folder holds that
config and nothing keras-hub-specific.
"""

import copy
import hashlib
import json
import os
import re
import warnings

import keras
import numpy as np

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.weights.h5"
METADATA_FILE = "metadata.json"
CARD_FILE = "README.md"
# Version 1: the four files above. A loader refuses a newer version.
FORMAT_VERSION = 1
# Shipped presets: package data, next to this module's package.
SHIPPED_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "presets")


def library_version():
    """`keras_contrast.__version__`, read without importing the package
    (this module is imported while the package initialises)."""
    from keras_contrast import __version__  # noqa: PLC0415 (import cycle)

    return __version__


def _version_tuple(version, argument):
    parts = re.findall(r"\d+", str(version))
    if not parts:
        raise ValueError(f"{argument} {version!r} is not a version such as '0.1.0'.")
    return tuple(int(p) for p in parts[:3])


def sha256(path):
    """The hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def shipped_presets():
    """`{name: folder}` of the presets shipped inside the package."""
    if not os.path.isdir(SHIPPED_DIR):
        return {}
    return {name: os.path.join(SHIPPED_DIR, name) for name in sorted(os.listdir(SHIPPED_DIR))
            if os.path.isfile(os.path.join(SHIPPED_DIR, name, METADATA_FILE))}


def read_metadata(folder):
    """`metadata.json` of a preset folder, checked against this library.

    Raises:
        ValueError: the folder lacks `metadata.json` or `config.json`, or
            its format or minimum library version is newer than this
            library's.
    """
    for required in (CONFIG_FILE, METADATA_FILE):
        if not os.path.isfile(os.path.join(folder, required)):
            raise ValueError(f"Preset folder {folder!r} has no {required}; a preset folder "
                             f"holds {CONFIG_FILE}, {WEIGHTS_FILE}, {METADATA_FILE} and "
                             f"{CARD_FILE} (keras_contrast.models.save_to_preset writes them).")
    with open(os.path.join(folder, METADATA_FILE)) as handle:
        try:
            metadata = json.load(handle)
        except json.JSONDecodeError as error:
            raise ValueError(f"{METADATA_FILE} of preset folder {folder!r} is not JSON: "
                             f"{error}") from None
    version = metadata.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version > FORMAT_VERSION:
        raise ValueError(f"Preset folder {folder!r} has format_version {version!r}; this "
                         f"library reads format versions up to {FORMAT_VERSION}.")
    needed = metadata.get("min_library_version", "0")
    if _version_tuple(needed, "min_library_version") > _version_tuple(library_version(),
                                                                      "__version__"):
        raise ValueError(f"Preset folder {folder!r} needs keras_contrast >= {needed}; this is "
                         f"{library_version()}.")
    return metadata


def apply_overrides(config, overrides, preset):
    """A copy of a serialised model config with `overrides` set.

    An override replaces the argument of that name in the model's own
    config or, failing that, in the configs of the objects it holds
    (the backbone: `norm`, `width`, ...), at the shallowest depth where
    the name occurs.

    Raises:
        ValueError: an override that no object of the config takes.
    """
    config = copy.deepcopy(config)
    unknown = []
    for name, value in overrides.items():
        level = [config]
        found = False
        while level and not found:
            deeper = []
            for node in level:
                inner = node.get("config", {})
                if name in inner and name not in ("name", "build_config"):
                    inner[name] = value
                    found = True
                deeper.extend(_serialized_children(inner))
            level = deeper
        if not found:
            unknown.append(name)
    if unknown:
        raise ValueError(f"Preset {preset!r} does not take {sorted(unknown)}: they are neither "
                         f"arguments of its {config.get('class_name')} nor of the objects it "
                         "holds.")
    return config


def _serialized_children(inner):
    children = []
    for value in inner.values():
        values = value if isinstance(value, list) else [value]
        children.extend(v for v in values
                        if isinstance(v, dict) and "class_name" in v and "config" in v
                        and isinstance(v["config"], dict))
    return children


def load_folder(folder, preset, load_weights=True, overrides=None):
    """The model of a preset folder (see `keras_contrast.models.from_preset`).

    Raises:
        ValueError: a folder that is not a preset, weights whose sha256
            differs from the metadata's, or weights that do not fit the
            model the overrides build.
    """
    metadata = read_metadata(folder)
    with open(os.path.join(folder, CONFIG_FILE)) as handle:
        config = json.load(handle)
    overrides = dict(overrides or {})
    config.pop("compile_config", None)  # folders written before it was left out
    config = apply_overrides(config, overrides, preset)
    weights = os.path.join(folder, WEIGHTS_FILE)
    if load_weights:
        if not os.path.isfile(weights):
            raise ValueError(f"Preset {preset!r} ({folder!r}) has no {WEIGHTS_FILE}; pass "
                             "load_weights=False to build it with random weights.")
        expected = metadata.get("weights", {}).get(WEIGHTS_FILE, {}).get("sha256")
        if expected is None:
            raise ValueError(f"{METADATA_FILE} of preset {preset!r} records no sha256 of "
                             f"{WEIGHTS_FILE}.")
        actual = sha256(weights)
        if actual != expected:
            raise ValueError(f"{WEIGHTS_FILE} of preset {preset!r} ({folder!r}) has sha256 "
                             f"{actual}, but {METADATA_FILE} records {expected}: the file is "
                             "damaged or was replaced.")
    # safe_mode: a preset deserialises no Python code (no Lambda layers).
    model = keras.saving.deserialize_keras_object(config, safe_mode=True)
    if load_weights:
        _load_weights(model, weights, preset, overrides)
    return model


def _load_weights(model, weights, preset, overrides):
    try:
        with warnings.catch_warnings():
            # Keras looks for the containers of a functional model's
            # operation lists too; the layers' variables load from their
            # own paths, and a missing variable raises (below).
            warnings.filterwarnings("ignore", message="Skipping nested container")
            warnings.filterwarnings("ignore", message=".*_load_container_state")
            model.load_weights(weights)
    except ValueError as error:
        first = str(error).strip().splitlines()
        first = first[0] if first else ""
        raise ValueError(f"The weights of preset {preset!r} do not fit the model that the "
                         f"overrides {overrides} build ({first}); an override must keep every "
                         "weight's shape (e.g. norm='sync' -> 'batch').") from None


def default_card(name, metadata):
    """A minimal model card from `metadata` (used when the saver gives none)."""
    lines = [f"# {name}", "", metadata.get("description", "A keras_contrast preset."), ""]
    for key in sorted(metadata):
        if key not in ("description", "weights"):
            lines.append(f"- **{key}**: `{json.dumps(metadata[key])}`")
    return "\n".join(lines) + "\n"


def _model_variables_only(model, config):
    """`model`, or where it is compiled an uncompiled twin holding its values
    (`config`: the model's, without compile config).

    Keras' `save_weights` also writes a compiled model's optimizer state
    (AdamW: two moments per variable, three times the model's size), which a
    preset neither needs nor loads; Keras has no public switch to leave it
    out, so the values go into a twin built from the same config.
    """
    if getattr(model, "optimizer", None) is None:
        return model
    twin = keras.saving.deserialize_keras_object(config, safe_mode=False)
    if not twin.built or [tuple(v.shape) for v in twin.variables] != [
            tuple(v.shape) for v in model.variables]:
        raise ValueError(f"save_to_preset cannot rebuild {type(model).__name__} from its config "
                         "with the same variables; it needs get_config / build_config that "
                         "recreate every variable.")
    for target, source in zip(twin.variables, model.variables):
        target.assign(np.asarray(source))
    return twin


def save_folder(model, folder, metadata=None, card=None, overwrite=False):
    """Writes a preset folder (see `keras_contrast.models.save_to_preset`)."""
    if not isinstance(model, keras.Model):
        raise TypeError(f"model must be a keras.Model, got {type(model).__name__}.")
    if not model.built:
        raise ValueError("model must be built (call it on data or `model.build(shape)`) before "
                         "save_to_preset: its weights must exist.")
    if metadata is not None and not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict, got {type(metadata).__name__}.")
    if card is not None and not isinstance(card, str):
        raise TypeError(f"card must be a str (Markdown), got {type(card).__name__}.")
    if not isinstance(folder, (str, os.PathLike)):
        raise TypeError(f"folder must be a path, got {type(folder).__name__}.")
    folder = os.fspath(folder)
    if os.path.exists(os.path.join(folder, CONFIG_FILE)) and not overwrite:
        raise ValueError(f"folder {folder!r} already holds a preset; pass overwrite=True to "
                         "replace it.")
    metadata = dict(metadata or {})
    reserved = sorted({"format_version", "min_library_version", "weights"} & set(metadata))
    if reserved:
        raise ValueError(f"metadata must not set {reserved}: save_to_preset writes them.")
    try:
        json.dumps(metadata)
    except TypeError as error:
        raise TypeError(f"metadata must be JSON-serialisable: {error}") from None
    config = keras.saving.serialize_keras_object(model)
    config.pop("compile_config", None)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, CONFIG_FILE), "w") as handle:
        json.dump(config, handle, indent=1)
    weights = os.path.join(folder, WEIGHTS_FILE)
    _model_variables_only(model, config).save_weights(weights, overwrite=True)
    metadata.update(
        format_version=FORMAT_VERSION, min_library_version=library_version(),
        class_name=type(model).__name__, keras_version=keras.__version__,
        weights={WEIGHTS_FILE: {"sha256": sha256(weights), "bytes": os.path.getsize(weights)}})
    with open(os.path.join(folder, METADATA_FILE), "w") as handle:
        json.dump(metadata, handle, indent=2, sort_keys=True)
    with open(os.path.join(folder, CARD_FILE), "w") as handle:
        handle.write(card if card is not None else
                     default_card(os.path.basename(os.path.normpath(folder)), metadata))
    return folder
