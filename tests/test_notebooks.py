"""The course's notebooks, by their structure (running them is nbmake's job).

Every chapter of ``mailkit_edu.course.CHAPTERS`` exists; opens with its objectives, time
and prerequisites; ends with "Key points" and "Questions"; is committed without
outputs; uses only allowed cell tags; has navigation cells exactly as the script writes
them (so every link points at a chapter that exists); and every ``mailkit_edu`` name it
uses exists in the package.
"""

from __future__ import annotations

import ast
import importlib
import json
import re
from pathlib import Path

import pytest

from mailkit_edu import course

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
ALLOWED_TAGS = {"raises-exception", course.NAVIGATION_TAG, course.INDEX_TAG}
CHAPTER_IDS = [chapter.slug for chapter in course.CHAPTERS]


def load(chapter: course.Chapter) -> dict:
    return json.loads((NOTEBOOKS / chapter.file).read_text(encoding="utf-8"))


def text(cell: dict) -> str:
    return "".join(cell["source"])


def tags(cell: dict) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


def content_cells(notebook: dict) -> list[dict]:
    return [c for c in notebook["cells"] if course.NAVIGATION_TAG not in tags(c)]


@pytest.fixture(params=course.CHAPTERS, ids=CHAPTER_IDS)
def chapter(request) -> course.Chapter:
    return request.param


def test_every_chapter_exists_and_nothing_else_is_in_the_folder():
    expected = {chapter.file for chapter in course.CHAPTERS}
    found = {path.name for path in NOTEBOOKS.glob("*.ipynb")}
    assert found == expected


def test_the_first_cell_states_objectives_time_and_prerequisites(chapter):
    first = load(chapter)["cells"][0]
    assert first["cell_type"] == "markdown"
    words = text(first)
    assert words.startswith(f"# {chapter.number:02d} ·"), words[:60]
    for needed in ("Objectives", "Time", "Prerequisites"):
        assert needed in words, f"{chapter.file}: the first cell needs {needed!r}"


def test_it_ends_with_key_points_and_questions(chapter):
    cells = content_cells(load(chapter))
    tail = "\n".join(text(c) for c in cells[-3:] if c["cell_type"] == "markdown")
    assert "## Key points" in tail and "## Questions" in tail, chapter.file


def test_it_is_committed_without_outputs_and_with_allowed_tags_only(chapter):
    for cell in load(chapter)["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, chapter.file
        assert set(tags(cell)) <= ALLOWED_TAGS, (chapter.file, tags(cell))


def test_the_navigation_is_what_the_script_writes(chapter, tmp_path):
    notebook = load(chapter)
    (tmp_path / chapter.file).write_text(json.dumps(notebook), encoding="utf-8")
    course.write_navigation(tmp_path)
    rewritten = json.loads((tmp_path / chapter.file).read_text(encoding="utf-8"))
    assert [text(c) for c in rewritten["cells"]] == [text(c) for c in notebook["cells"]], (
        f"{chapter.file}: run `make nav` (python -m mailkit_edu.course)"
    )
    nav = [c for c in notebook["cells"] if course.NAVIGATION_TAG in tags(c)]
    assert len(nav) == 2
    for target in re.findall(r"\]\(([^)#]+)", text(nav[0])):
        assert (NOTEBOOKS / target).exists(), target


def test_the_index_lists_every_chapter():
    index = load(course.INDEX)
    cells = [c for c in index["cells"] if course.INDEX_TAG in tags(c)]
    assert len(cells) == 1 and text(cells[0]) == course.index_markdown()


def _names_used(source: str) -> set[tuple[str, str]]:
    """(module, name) pairs a cell takes from mailkit_edu: ``mk.x``, ``from … import x``."""
    flags = ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT  # notebooks may "await"
    tree = compile(source, "<cell>", "exec", flags=flags)
    aliases = {"mk": "mailkit_edu", "mailkit_edu": "mailkit_edu"}
    used = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mailkit_edu"):
            used |= {(node.module, alias.name) for alias in node.names}
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("mailkit_edu"):
                    aliases[alias.asname or alias.name] = alias.name
                    importlib.import_module(alias.name)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            module = aliases.get(node.value.id)
            if module is not None:
                used.add((module, node.attr))
    return used


def test_every_mailkit_name_a_chapter_uses_exists(chapter):
    for cell in load(chapter)["cells"]:
        if cell["cell_type"] != "code":
            continue
        source = "\n".join(
            line for line in text(cell).splitlines() if not line.lstrip().startswith(("%", "!"))
        )
        for module, name in _names_used(source):
            target = importlib.import_module(module)
            if not hasattr(target, name):  # a submodule imported by name
                importlib.import_module(f"{module}.{name}")


def test_every_lab_attribute_a_chapter_uses_exists(chapter, lab):
    pattern = re.compile(r"\blab\.([A-Za-z_][A-Za-z0-9_]*)")
    for cell in load(chapter)["cells"]:
        if cell["cell_type"] == "code":
            for name in pattern.findall(text(cell)):
                assert hasattr(lab, name), f"{chapter.file}: lab.{name} does not exist"


def test_the_navigation_script_changes_nothing_twice(tmp_path):
    for chapter in course.CHAPTERS:
        (tmp_path / chapter.file).write_text(json.dumps(load(chapter)), encoding="utf-8")
    course.write_navigation(tmp_path)
    first = {p.name: p.read_text() for p in tmp_path.iterdir()}
    assert course.write_navigation(tmp_path) == []
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == first


def test_a_failed_checkpoint_raises_only_when_strict(monkeypatch):
    monkeypatch.delenv("MAILKIT_STRICT_CHECKPOINTS", raising=False)
    course.checkpoint(False, "yes", "try again")
    monkeypatch.setenv("MAILKIT_STRICT_CHECKPOINTS", "1")
    course.checkpoint(True, "yes", "try again")
    with pytest.raises(AssertionError, match="try again"):
        course.checkpoint(False, "yes", "try again")


def test_the_readme_lists_every_chapter_with_a_binder_badge():
    readme = (NOTEBOOKS.parent / "README.md").read_text(encoding="utf-8")
    assert "mybinder.org/badge_logo.svg" in readme and "environment.yml" in readme
    for chapter in course.CHAPTERS:
        assert f"](notebooks/{chapter.file})" in readme, chapter.file
