"""BUILD is what tools/update_build.py writes, lists every package module, has a
py_test for every test file, and uses no external repository (Bazel runs offline).

Under Bazel this test runs in its runfiles tree, which BUILD makes hold the tree's
Python files, BUILD and tools/update_build.py; under pytest, in the checkout.
"""

import pathlib
import re

from tests.test_case import load_tool

# Not resolve(): under Bazel the files are symlinks into the checkout, and the test
# must see the runfiles tree (what BUILD declares), not the checkout.
ROOT = pathlib.Path(__file__).absolute().parents[1]


def build_text():
    return (ROOT / "BUILD").read_text()


def build_targets():
    """Parses BUILD into {rule kind: [(name, [srcs], body)]}."""
    targets = {}
    for kind, body in re.findall(r"^(py_\w+)\((.*?)^\)", build_text(), re.S | re.M):
        name = re.search(r'name\s*=\s*"([^"]+)"', body).group(1)
        srcs_match = re.search(r"srcs\s*=\s*\[(.*?)\]", body, re.S)
        srcs = re.findall(r'"([^"]+)"', srcs_match.group(1)) if srcs_match else []
        targets.setdefault(kind, []).append((name, srcs, body))
    return targets


def python_files(folder):
    return sorted(
        str(path.relative_to(ROOT))
        for path in (ROOT / folder).rglob("*.py")
        if "__pycache__" not in path.parts
    )


def test_build_is_what_update_build_writes():
    expected = load_tool("update_build").render(ROOT)
    assert build_text() == expected, "BUILD is out of date: run `python tools/update_build.py`"


def test_every_package_module_is_in_the_library():
    library_srcs = {
        src for name, srcs, _ in build_targets()["py_library"] if name == "keras_contrast"
        for src in srcs
    }
    missing = set(python_files("keras_contrast")) - library_srcs
    assert not missing, f"add to py_library keras_contrast in BUILD: {sorted(missing)}"
    stale = {src for src in library_srcs if not (ROOT / src).exists()}
    assert not stale, f"BUILD lists files that do not exist: {sorted(stale)}"


def test_every_test_file_has_a_py_test_and_helpers_are_listed():
    targets = build_targets()
    tests = {name: (srcs, body) for name, srcs, body in targets.get("py_test", [])}
    test_files = python_files("tests")
    for path in (f for f in test_files if f.endswith("_test.py")):
        name = path[len("tests/"):-len(".py")].replace("/", "_")
        assert name in tests, f"add a py_test {name!r} for {path} to BUILD"
        srcs, body = tests[name]
        assert srcs[0] == path, f"py_test {name!r} must list {path} first in srcs, got {srcs}"
        assert f'args = ["$(location {path})"]' in body, f"py_test {name!r} must run {path}"
        assert 'main = "//tools/bazel:pytest_main.py"' in body, name
    all_srcs = {src for kind in targets.values() for _, srcs, _ in kind for src in srcs}
    missing_helpers = set(test_files) - all_srcs
    assert not missing_helpers, f"list these test helpers in BUILD: {sorted(missing_helpers)}"


def test_listed_data_files_of_tests_exist():
    # Files of tests/ only: this test's runfiles hold tests/ but not the top-level files
    # (README.md, ...), whose absence Bazel reports itself ("missing input file").
    data = re.findall(r"data\s*=\s*\[(.*?)\]", build_text(), re.S)
    listed = {path for block in data for path in re.findall(r'"([^"]+)"', block)}
    assert "setup.cfg" in listed, "test_helpers must carry setup.cfg (pytest's settings)"
    missing = sorted(p for p in listed if p.startswith("tests/") and not (ROOT / p).exists())
    assert not missing, f"BUILD lists data files that do not exist: {missing}"


def test_no_rule_uses_an_external_repository():
    text = build_text()
    loads = re.findall(r"^\s*load\((.*?)\)", text, re.S | re.M)
    assert not loads, f"BUILD must use native rules only (Bazel 4.2, offline), loads: {loads}"
    external = sorted(set(re.findall(r'"(@[^"]*)"', text)))
    assert not external, f"BUILD refers to external repositories: {external}"


def test_workspace_defines_local_repositories_only():
    text = (ROOT / "WORKSPACE").read_text()
    code = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    rules = re.findall(r"^(\w+)\(", code, re.M)
    fetching = sorted(set(rules) - {"local_repository", "venv_python", "load",
                                    "register_toolchains", "workspace"})
    assert not fetching, f"WORKSPACE must not download anything, found: {fetching}"
    assert "load(\"@" not in code, "WORKSPACE must not load from an external repository"
