"""Rewrites BUILD from the files on disk (run after adding a module or test).

    python tools/update_build.py            # every file in the work tree
    python tools/update_build.py --staged   # only files in git's index
"""

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
HEADER = '''# Bazel targets of keras_contrast. Regenerate with `python tools/update_build.py`;
# tests/build_test.py fails when a module or test file is missing here.
load("@rules_python//python:defs.bzl", "py_library", "py_test")

package(default_visibility = ["//visibility:public"])
'''


STAGED_ONLY = "--staged" in sys.argv


def files(folder):
    if STAGED_ONLY:
        listed = subprocess.run(
            ["git", "ls-files", "--cached", folder],
            cwd=ROOT, capture_output=True, text=True, check=True,
        ).stdout.split()
        return sorted(p for p in listed if p.endswith(".py"))
    return sorted(
        str(p.relative_to(ROOT)) for p in (ROOT / folder).rglob("*.py")
        if "__pycache__" not in p.parts
    )


def srcs_list(paths, indent="        "):
    return "\n".join(f'{indent}"{p}",' for p in paths)


def main():
    package = files("keras_contrast")
    tests = files("tests")
    helpers = [t for t in tests if not t.endswith("_test.py")]
    blocks = [HEADER]
    blocks.append(
        "py_library(\n"
        '    name = "keras_contrast",\n'
        f"    srcs = [\n{srcs_list(package)}\n    ],\n"
        "    imports = [\".\"],\n"
        ")\n"
    )
    blocks.append(
        "py_library(\n"
        '    name = "test_helpers",\n'
        "    testonly = True,\n"
        f"    srcs = [\n{srcs_list(helpers)}\n    ],\n"
        '    deps = [":keras_contrast"],\n'
        ")\n"
    )
    for test in (t for t in tests if t.endswith("_test.py")):
        name = test[len("tests/"):-len(".py")].replace("/", "_")
        blocks.append(
            "py_test(\n"
            f'    name = "{name}",\n'
            '    size = "large",\n'
            f'    srcs = [\n        "{test}",\n        "tests/pytest_main.py",\n    ],\n'
            '    main = "tests/pytest_main.py",\n'
            f'    args = ["$(location {test})"],\n'
            '    env = {"KERAS_BACKEND": "tensorflow"},\n'
            '    deps = [":test_helpers"],\n'
            ")\n"
        )
    (ROOT / "BUILD").write_text("\n".join(blocks))


if __name__ == "__main__":
    main()
