"""Entry point of every generated `py_test` in BUILD: runs pytest on one test file.

A Bazel `py_test` runs a Python main and reads its exit status; it knows nothing of
pytest. The tests are pytest files (fixtures, parametrize, tests/conftest.py), so each
target runs this main with its file: `pytest_main.py tests/losses/dcl_test.py` (more
pytest arguments may follow: `bazel test //:losses_dcl_test --test_arg=-kclip`). It runs
with the settings of `make test`: setup.cfg's [tool:pytest] (markers, warning filters),
`-m "not slow"`, and tests/conftest.py (loaded by pytest because setup.cfg, the rootdir,
is one of the test's runfiles). Bazel's per-test temporary folder holds what pytest and
Hypothesis write, and the results go to Bazel's XML file.

It also checks that `keras_contrast` and `tests` come from the runfiles (what BUILD
declares), not from the editable install in the venv.
"""

import importlib.util
import os
import sys

import pytest

NO_TESTS_COLLECTED = 5


def _check_imports_from_runfiles(root):
    for name in ("keras_contrast", "tests"):
        spec = importlib.util.find_spec(name)
        origin = os.path.abspath(spec.origin) if spec and spec.origin else None
        if origin is None or not origin.startswith(root + os.sep):
            sys.exit(f"pytest_main: {name} is imported from {origin}, not from the runfiles "
                     f"at {root}: check the py_library targets in BUILD")


def main(argv):
    if not argv or not argv[0].endswith(".py"):
        sys.exit(f"usage: pytest_main.py TEST_FILE [PYTEST_ARG ...] (got {argv})")
    root = os.getcwd()  # Bazel runs each test in the workspace folder of its runfiles.
    if not os.path.isfile(os.path.join(root, "setup.cfg")):
        sys.exit(f"pytest_main: setup.cfg is not in the runfiles at {root}")
    _check_imports_from_runfiles(root)
    scratch = os.environ.get("TEST_TMPDIR") or os.path.join(root, ".pytest_tmp")
    os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", os.path.join(scratch, "hypothesis"))
    os.environ.setdefault("MPLCONFIGDIR", os.path.join(scratch, "matplotlib"))
    args = ["-q", "-c", "setup.cfg", "--rootdir", root, "-p", "no:cacheprovider",
            "-m", "not slow", "--basetemp", os.path.join(scratch, "pytest")]
    if os.environ.get("XML_OUTPUT_FILE"):
        args.append("--junitxml=" + os.environ["XML_OUTPUT_FILE"])
    code = pytest.main([*args, *argv[1:], argv[0]])
    if code == NO_TESTS_COLLECTED:
        print(f"pytest_main: every test of {argv[0]} is marked slow; none ran")
        return 0
    return int(code)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
