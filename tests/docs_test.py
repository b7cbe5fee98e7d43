"""The documentation holds together: every "docs/design.md §N" cited in the
code resolves to a heading of docs/design.md, no file points outside the
repository, relative markdown links reach existing files, and §4.1 lists the
normalization names the code accepts."""

import os
import pathlib
import re
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DESIGN = "docs/design.md"
# Where citations of the design notes may appear.
CITING = ("keras_contrast", "tests", "examples", "README.md", "docs")
# Paths that exist only outside the repository. Built from pieces so that
# this file, which is scanned too, does not contain them.
OUTSIDE = ("../" + "shared", "DESIGN" + ".md", "seeds" + "/")

# "design.md §4", also across one line break inside a docstring or a
# comment ("design.md" at the end of a line, "# §4.1" on the next).
_CITATION = re.compile(r"design\.md[ \t]*(?:\n[ \t]*(?:#[ \t]*)?)?§(\d+(?:\.\d+)*)")
_HEADING = re.compile(r"^#{1,6}[ \t]+§(\d+(?:\.\d+)*)[ \t]", re.M)
# A cross-reference inside design.md: "§2.4", "(§3.3)".
_SECTION = re.compile(r"§(\d+(?:\.\d+)*)")
_FENCE = re.compile(r"^```.*?^```[ \t]*$", re.M | re.S)
_INLINE_CODE = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"!?\[[^\]\n]*\]\(\s*([^)\s]+)(?:\s+\"[^\"]*\")?\s*\)")


def repository_files(root=ROOT):
    """Files of the working tree that git tracks or would track (new files
    included), relative to `root`."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=root, check=True, capture_output=True,
        ).stdout.decode("utf-8").split("\0")
        return sorted(name for name in listed if name and (root / name).is_file())
    except (OSError, subprocess.CalledProcessError):
        # No git (e.g. a Bazel sandbox): walk the tree, without following
        # links, skipping hidden folders (.git, .venv), caches and outputs.
        found = []
        for folder, subfolders, files in os.walk(root):
            subfolders[:] = [
                name for name in subfolders
                if not name.startswith((".", "bazel-", "__pycache__"))
                and not name.endswith(".egg-info")
            ]
            found.extend(
                str((pathlib.Path(folder) / name).relative_to(root)) for name in files)
        return sorted(found)


def read_text(path):
    """The file's text, or None for a binary file."""
    data = pathlib.Path(path).read_bytes()
    if b"\0" in data[:8192]:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def headings(design_text):
    """The section numbers of the headings of design.md, e.g. {"1", "4.1"}."""
    return _HEADING.findall(design_text)


def citations(text):
    """The section numbers cited as "design.md §N" in `text`."""
    return _CITATION.findall(text)


def unresolved_citations(texts, sections):
    """`[(file, "§N")]` for each citation in `texts` ({file: text}) whose
    section is not among `sections`."""
    return [
        (name, "§" + number)
        for name, text in sorted(texts.items())
        for number in citations(text)
        if number not in sections
    ]


def outside_references(texts):
    """`[(file, line number, path)]` for each reference to a path outside
    the repository."""
    found = []
    for name, text in sorted(texts.items()):
        for number, line in enumerate(text.splitlines(), 1):
            found.extend((name, number, path) for path in OUTSIDE if path in line)
    return found


def broken_links(markdown_file, root=ROOT):
    """The relative link targets of a markdown file that are not files or
    folders of the repository (code blocks and inline code are skipped;
    web links and in-page anchors are not checked)."""
    markdown_file = pathlib.Path(markdown_file)
    text = _INLINE_CODE.sub("", _FENCE.sub("", markdown_file.read_text(encoding="utf-8")))
    broken = []
    for target in _LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("#"):
            continue
        path = target.split("#", 1)[0]
        resolved = (markdown_file.parent / path).resolve()
        inside = resolved == root.resolve() or root.resolve() in resolved.parents
        if not path or not inside or not resolved.exists():
            broken.append(target)
    return broken


def _texts(names, root=ROOT):
    texts = {}
    for name in names:
        text = read_text(root / name)
        if text is not None:
            texts[name] = text
    return texts


def _citing_files(root=ROOT):
    return [
        name for name in repository_files(root)
        if name.split("/", 1)[0] in CITING or name in CITING
    ]


def _design_text(root=ROOT):
    return (root / DESIGN).read_text(encoding="utf-8")


# The repository.


def test_design_notes_have_unique_numbered_sections():
    sections = headings(_design_text())
    assert sections, f"{DESIGN} has no '## §N' headings"
    duplicated = sorted({s for s in sections if sections.count(s) > 1})
    assert not duplicated, f"{DESIGN} numbers several headings {duplicated}"
    for number in sections:
        parent = number.rsplit(".", 1)[0]
        assert parent == number or parent in sections, (
            f"{DESIGN} has §{number} but no §{parent}")


def test_every_cited_design_section_exists():
    sections = set(headings(_design_text()))
    texts = _texts(_citing_files())
    cited = {number for text in texts.values() for number in citations(text)}
    # The code cites these; the scan must find them (it would pass vacuously
    # if the pattern stopped matching).
    assert {"1", "2", "4", "4.1", "5", "6"} <= cited
    missing = unresolved_citations(texts, sections)
    assert not missing, f"cited sections missing from {DESIGN}: {missing}"


def test_design_notes_cross_references_resolve():
    text = _design_text()
    sections = set(headings(text))
    dangling = sorted(set(_SECTION.findall(text)) - sections)
    assert not dangling, f"{DESIGN} refers to sections it lacks: {dangling}"


def test_no_file_references_a_path_outside_the_repository():
    found = outside_references(_texts(repository_files()))
    assert not found, (
        "files reference paths outside the repository (cite docs/design.md §N "
        f"instead): {found}")


@pytest.mark.parametrize(
    "markdown", [name for name in repository_files() if name.endswith(".md")])
def test_relative_markdown_links_reach_existing_files(markdown):
    assert not broken_links(ROOT / markdown), (
        f"{markdown} links to missing files: {broken_links(ROOT / markdown)}")


def _listed_names(message, probe):
    return set(re.findall(r"'([a-z]+)'", message)) - {probe}


def _table_names(section_text, column):
    """Names of the §4.1 table whose `column` (3: `norm=`, 4: `to=`) says yes."""
    names = set()
    for row in re.findall(r"^\|\s*`\"(\w+)\"`\s*\|(.*)\|\s*$", section_text, re.M):
        cells = [cell.strip() for cell in row[1].split("|")]
        if cells[column - 1] == "yes":
            names.add(row[0])
    return names


def test_section_4_1_lists_the_normalization_names_the_code_accepts():
    from keras_contrast import normalization

    text = _design_text()
    section = text[text.index("### §4.1"):text.index("## §5")]
    with pytest.raises(ValueError) as norm_error:
        normalization.normalization_layer("nonexistent")
    with pytest.raises(ValueError) as to_error:
        normalization.convert_batch_norm(None, to="nonexistent")
    assert _table_names(section, 3) == _listed_names(str(norm_error.value), "nonexistent")
    assert _table_names(section, 4) == _listed_names(str(to_error.value), "nonexistent")


def test_design_notes_state_what_the_citing_code_relies_on():
    text = _design_text()

    def section(number):
        """The section's text, its subsections included, whitespace collapsed."""
        start = re.search(rf"^#+ §{re.escape(number)} ", text, re.M).start()
        following = re.search(r"^## §", text[start + 1:], re.M)
        body = text[start:start + 1 + following.start()] if following else text[start:]
        return " ".join(body.split())

    # tests/test_case.py: the float32 tolerances.
    assert "rtol 1e-5" in section("1") and "1e-6·max|ref|" in section("1")
    assert "Exactness is the spec" in section("1")
    # normalization/precise.py: "docs/design.md §4: 100 to 1000" batches.
    assert "100 to 1000" in section("4")
    for name in ("Shuffle BN", "Precise BN", "Adaptive BN", "FrozenBatchNormalization",
                 "SplitBatchNormalization", "GhostBatchNormalization", "frozen_statistics"):
        assert name in section("4"), name
    # training/contrastive_model.py, callbacks: the gradient inf-norm and τ monitors.
    for name in ("GradientNormMonitor", "TemperatureMonitor", "freeze_patch_projection",
                 "after_optimizer_step"):
        assert name in section("5"), name
    # training/grad_cache.py: ghost batch = chunk, replayed dropout.
    assert "ghost batch = chunk" in section("6") and "SeedGenerator" in section("6")
    # The 1/R convention lives in §3 and names the function that applies it.
    assert "assemble_loss" in section("3")


# The checks themselves, on a repository made up in a temporary folder.


@pytest.fixture
def fake_repository(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "pkg").mkdir()
    (tmp_path / "docs" / "design.md").write_text(
        "# Notes\n\n## §1 One\n\nSee §2.1.\n\n## §2 Two\n\n### §2.1 Two point one\n")
    return tmp_path


def test_citation_checks_flag_a_missing_section(fake_repository):
    sections = set(headings((fake_repository / "docs" / "design.md").read_text()))
    assert sections == {"1", "2", "2.1"}
    # Written so that this file's own text holds no citation of a missing
    # section (the repository test scans it).
    ref = "docs/design.md"
    texts = {
        "pkg/good.py": f'"""Uses {ref} §2.1 and ({ref} §1)."""',
        "pkg/wrapped.py": f'"""Creates it ({ref}\n    §2.1)."""\n# {ref}\n# §2',
        "pkg/bad.py": f"# the rule of {ref} §9, and {ref} §2.3",
        "pkg/none.py": f"# {ref} is the file; § alone or {ref}\n\nx = 1  # §3 is not a citation",
    }
    assert citations(texts["pkg/wrapped.py"]) == ["2.1", "2"]
    assert unresolved_citations(texts, sections) == [
        ("pkg/bad.py", "§9"), ("pkg/bad.py", "§2.3")]


def test_outside_reference_check_flags_each_kind(fake_repository):
    texts = {
        "a.py": "# see " + "../" + "shared/" + "notes",
        "b.md": "as in " + "DESIGN" + ".md",
        "c.py": "x = 1\nopen('" + "seeds" + "/000.txt')",
        "d.md": "docs/design.md is fine, so is a design.md in lower case",
    }
    assert outside_references(texts) == [
        ("a.py", 1, "../" + "shared"), ("b.md", 1, "DESIGN" + ".md"), ("c.py", 2, "seeds" + "/"),
    ]


def test_link_check_flags_missing_and_escaping_targets(fake_repository):
    (fake_repository / "docs" / "checks.md").write_text("# Checks\n")
    page = fake_repository / "docs" / "README.md"
    page.write_text(
        "[ok](design.md) [ok too](./checks.md#static-checks) [web](https://example.com)\n"
        "[anchor](#top) ![missing](img/plot.png) [gone](old.md)\n"
        "[outside](../../elsewhere.md)\n"
        "```\n[in a code block](nowhere.md)\n```\n"
        "`[inline code](nowhere.md)`\n"
    )
    assert broken_links(page, root=fake_repository) == [
        "img/plot.png", "old.md", "../../elsewhere.md"]


@pytest.mark.skipif(shutil.which("git") is None, reason="needs the git command")
def test_repository_files_lists_new_files_and_skips_ignored_ones(tmp_path):
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / ".gitignore").write_text(".venv/\n")
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv" / "x.py").write_text("")
    (tmp_path / "new.md").write_text("")
    assert repository_files(tmp_path) == [".gitignore", "new.md"]
