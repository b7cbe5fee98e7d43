"""BUILD lists every package module and has a py_test for every test file."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]


def build_targets():
    """Parses BUILD into {rule kind: [(name, [srcs])]}."""
    text = (ROOT / "BUILD").read_text()
    targets = {}
    for kind, body in re.findall(r"^(py_\w+)\((.*?)^\)", text, re.S | re.M):
        name = re.search(r'name\s*=\s*"([^"]+)"', body).group(1)
        srcs_match = re.search(r"srcs\s*=\s*\[(.*?)\]", body, re.S)
        srcs = re.findall(r'"([^"]+)"', srcs_match.group(1)) if srcs_match else []
        targets.setdefault(kind, []).append((name, srcs))
    return targets


def python_files(folder):
    return sorted(
        str(path.relative_to(ROOT))
        for path in (ROOT / folder).rglob("*.py")
        if "__pycache__" not in path.parts
    )


def test_every_package_module_is_in_the_library():
    targets = build_targets()
    library_srcs = {
        src for name, srcs in targets["py_library"] if name == "keras_contrast" for src in srcs
    }
    missing = set(python_files("keras_contrast")) - library_srcs
    assert not missing, f"add to py_library keras_contrast in BUILD: {sorted(missing)}"
    stale = {src for src in library_srcs if not (ROOT / src).exists()}
    assert not stale, f"BUILD lists files that do not exist: {sorted(stale)}"


def test_every_test_file_has_a_py_test_and_helpers_are_listed():
    targets = build_targets()
    test_srcs = {src for _, srcs in targets.get("py_test", []) for src in srcs}
    all_srcs = {src for kind in targets.values() for _, srcs in kind for src in srcs}
    test_files = python_files("tests")
    missing_tests = {f for f in test_files if f.endswith("_test.py")} - test_srcs
    assert not missing_tests, f"add py_test targets to BUILD for: {sorted(missing_tests)}"
    missing_helpers = set(test_files) - all_srcs
    assert not missing_helpers, f"list these test helpers in BUILD: {sorted(missing_helpers)}"
