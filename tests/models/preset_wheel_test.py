"""The shipped presets travel in the wheel: `pip wheel --no-deps .`,
installed with `--no-deps` into a fresh venv and imported from outside the
checkout, loads every shipped preset with weights identical to the
checkout's."""

import json
import os
import shutil
import subprocess
import sys
import sysconfig

import numpy as np
import pytest

from keras_contrast.models import from_preset
from keras_contrast.models import preset_files

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Run in the fresh venv, from a folder outside the checkout: where the
# package comes from, and the first encoder output of every shipped preset.
PROBE = """
import json, sys
import numpy as np
import keras_contrast
from keras_contrast.models import from_preset, list_presets
from keras_contrast.models import preset_files
report = {"file": keras_contrast.__file__, "presets": {}}
for name, spec in list_presets().items():
    if not spec["weights"]:
        continue
    model = from_preset(name)
    folder = preset_files.shipped_presets()[name]
    entry = {"folder": folder, "sha256": preset_files.sha256(folder + "/model.weights.h5")}
    if hasattr(model, "encoder"):
        shape = model.encoder.input_shape[1:]
        x = np.random.default_rng(0).uniform(size=(2,) + tuple(shape)).astype("float32")
        entry["output"] = np.asarray(model.encoder(x, training=False)).tolist()
    else:
        tokens = np.ones((2, model.tower_a.input_shape[1]), "int32")
        entry["output"] = np.asarray(model.encode_a(tokens)).tolist()
    report["presets"][name] = entry
print("REPORT " + json.dumps(report))
"""


def _run(argv, **kwargs):
    completed = subprocess.run(argv, capture_output=True, text=True, timeout=600, **kwargs)
    assert completed.returncode == 0, (argv, completed.stdout[-2000:], completed.stderr[-3000:])
    return completed.stdout


# ~25 s on 2 cores (the wheel, a venv with pip, one import of TensorFlow).
def test_shipped_presets_load_from_an_installed_wheel(tmp_path):
    shipped = preset_files.shipped_presets()
    if not shipped:
        pytest.skip("no preset with weights is shipped yet")
    # The wheel is built from a copy, so the build leaves nothing in the checkout.
    source = tmp_path / "source"
    shutil.copytree(os.path.join(ROOT, "keras_contrast"), source / "keras_contrast",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(os.path.join(ROOT, name), source / name)
    wheels = tmp_path / "wheels"
    # --no-build-isolation: the test venv's setuptools builds it (nothing is
    # downloaded).
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
          "--quiet", "-w", str(wheels), str(source)])
    (wheel,) = list(wheels.glob("keras_contrast-*.whl"))
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)])
    python = str(venv / "bin" / "python")
    # TensorFlow and Keras come from the test venv: a path line in a .pth
    # adds its site-packages to sys.path without running its .pth files,
    # so the checkout's editable install does not come along.
    site = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
    with open(os.path.join(site.strip(), "test_venv.pth"), "w") as handle:
        handle.write(sysconfig.get_paths()["purelib"] + "\n")
    _run([python, "-m", "pip", "install", "--no-deps", "--no-index", "--quiet", str(wheel)])
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = _run([python, "-c", PROBE], cwd=str(outside), env=env)
    report = json.loads(out.split("REPORT ", 1)[1])
    assert report["file"].startswith(str(venv)), report["file"]
    assert set(report["presets"]) == set(shipped)
    for name, entry in report["presets"].items():
        assert entry["folder"].startswith(str(venv))
        assert entry["sha256"] == preset_files.sha256(
            os.path.join(shipped[name], preset_files.WEIGHTS_FILE))
        model = from_preset(name)
        if hasattr(model, "encoder"):
            shape = model.encoder.input_shape[1:]
            x = np.random.default_rng(0).uniform(size=(2,) + tuple(shape)).astype("float32")
            expected = np.asarray(model.encoder(x, training=False))
        else:
            expected = np.asarray(model.encode_a(np.ones((2, model.tower_a.input_shape[1]),
                                                         "int32")))
        np.testing.assert_array_equal(np.asarray(entry["output"], expected.dtype), expected)
