"""Graded exercises: one source, two outputs, instant self-checks and a grader for a class.

Role
    The graded exercises of the course live once, as nbgrader *source* notebooks in
    ``source/<exercise>/<exercise>.ipynb`` (solutions between ``### BEGIN SOLUTION`` and
    ``### END SOLUTION``, hidden tests between ``### BEGIN HIDDEN TESTS`` and ``### END
    HIDDEN TESTS``, and nbgrader's cell metadata: ``grade_id``, ``points``). This module

    * **generates** ``exercises/`` (stubs and visible tests: nbgrader's
      ``generate_assignment``) and ``solutions/`` (nbgrader's ``generate_solution``,
      not executed, hidden tests cleared) — byte for byte the same on every run, so CI
      can regenerate and fail on any difference (:func:`generate`, ``make exercises``);
    * gives the visible tests their **friendly verdicts** (:func:`verdict`,
      :func:`attempt`): "✗ Not yet: the server answered '503 5.5.1 Error: need MAIL
      command' — a command came out of order: the order is EHLO, AUTH, MAIL FROM, RCPT
      TO, DATA" instead of a bare ``AssertionError`` and a traceback;
    * **grades** a folder of submissions (:func:`grade`, ``mailkit-edu grade DIR``):
      every notebook gets its test cells back from the source (edited or deleted ones
      too), runs in a fresh kernel (so with a lab of its own) in a temporary folder of
      its own, with a time limit per cell and per notebook and its output capped, in
      parallel; each test cell scores its points when it runs without an error. The
      result is ``scores.csv`` (student, exercise, cell, points, max, status, note),
      ``totals.csv`` (a student × exercise table) and ``feedback/<student>.md``.

    Where nbgrader is installed, the scores come from nbgrader's own ``autograde`` and
    gradebook (one small course folder per notebook, so notebooks stay apart and run in
    parallel). Without it — or for a notebook whose kernel died under nbgrader, which
    then drops the notebook whole — a runner of ours applies the same rules: test cells
    put back by ``grade_id`` (OverwriteCells), every cell run with errors allowed and
    interrupted at its time limit (Execute), long output cut (LimitOutput), a test cell
    scores its points when it ends without an error, an answer a person must read waits
    for one. Unlike nbgrader's, it also keeps what ran before a crash or the notebook's
    time limit.

    Learners need none of nbgrader: the self-check helpers import only the standard
    library. Generating and ``--engine nbgrader`` need ``pip install .[grading]``.

This module must not import ipywidgets or IPython (it runs where neither is displayed).
"""

from __future__ import annotations

import argparse
import ast
import concurrent.futures
import contextlib
import copy
import filecmp
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "NotYet",
    "attempt",
    "generate",
    "grade",
    "restore",
    "totals",
    "verdict",
]

#: The folders of the course's exercises, relative to the repository root.
SOURCE, EXERCISES, SOLUTIONS = "source", "exercises", "solutions"
#: The stub a learner sees in place of a solution (nbgrader's ClearSolutions).
CODE_STUB = '# YOUR CODE HERE\nraise NotImplementedError("write your solution here")'
#: Seconds one cell may run while grading, and one notebook in all.
CELL_TIMEOUT, NOTEBOOK_TIMEOUT = 20.0, 180.0
#: Characters of output one graded cell keeps (the rest is dropped, with a note).
OUTPUT_LIMIT = 20_000
#: Seconds a hanging worker gets after its notebook's time is up before it is killed.
KILL_GRACE = 10.0
#: How the read guard in a graded kernel reports a refused path (on the kernel's stderr).
REFUSED = "mailkit-edu grade: refused"
#: What a cell's outcome says when the kernel died under it.
KERNEL_DIED = "the kernel died while this cell ran"
#: Seconds a learner's function may wait on one socket operation inside :func:`attempt`.
ATTEMPT_SOCKET_TIMEOUT = 10.0


def course_root() -> Path:
    """The repository that holds ``source/`` (the package's parent folder, or the cwd)."""
    here = Path(__file__).resolve().parent.parent
    return here if (here / SOURCE).is_dir() else Path.cwd()


def chapter_of(exercise: str) -> str:
    """The chapter an exercise belongs to, from its number: ``08-pop3-uidl`` → "08 POP3: …"."""
    from .course import CHAPTERS  # here, so that a worker can run this file without the package

    number = exercise[:2]
    for chapter in CHAPTERS:
        if f"{chapter.number:02d}" == number:
            return f"{number} {chapter.title}"
    return exercise


# -- self-check: the verdicts a learner reads ------------------------------------------------


class NotYet(AssertionError):
    """A test that did not pass, with a sentence that says what to do next.

    It is an ``AssertionError`` (so nbgrader and the grader count the cell as failed),
    but Jupyter shows only its message, not a traceback.
    """

    def _render_traceback_(self) -> list[str]:  # IPython's hook for custom tracebacks
        return [f"\x1b[1;33m✗ Not yet: {self}\x1b[0m"]


def verdict(passed: object, success: str, hint: str) -> bool:
    """Say ✓ ``success`` when ``passed`` is true, else raise :class:`NotYet` with ``hint``."""
    if not passed:
        raise NotYet(hint)
    print(f"✓ {success}")
    return True


#: What common exceptions mean for a learner's mail client, by type.
_FRIENDLY: tuple[tuple[type[BaseException], str], ...] = (
    (
        TimeoutError,
        "it waited more than {timeout:g} s for the server. Did every command end with "
        "\\r\\n (CRLF)? Are you reading a reply the server never sends — or one more "
        "line than it sent?",
    ),
    (
        ConnectionRefusedError,
        "nothing listens on that host and port: use the host and port you were given "
        "(lab.port(...)), and check the server runs (lab.servers).",
    ),
    (
        ConnectionResetError,
        "the server closed the connection: its last reply in lab.transcript() says why.",
    ),
    (BrokenPipeError, "the server had already closed the connection when you wrote to it."),
    (EOFError, "the server closed the connection while you were waiting for a reply."),
)


def attempt(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call a learner's ``function``; turn what goes wrong into a :class:`NotYet` sentence.

    Sockets the function opens time out after :data:`ATTEMPT_SOCKET_TIMEOUT` seconds
    instead of waiting forever (a missing ``\\r\\n`` is the classic cause).
    """
    name = getattr(function, "__name__", "your function")
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(ATTEMPT_SOCKET_TIMEOUT)
    try:
        return function(*args, **kwargs)
    except NotYet:
        raise
    except NotImplementedError:
        raise NotYet(
            f"{name}() is not written yet: replace `raise NotImplementedError(...)` "
            "with your code, run that cell, then this one again."
        ) from None
    except Exception as error:
        for kind, text in _FRIENDLY:
            if isinstance(error, kind):
                message = text.format(timeout=ATTEMPT_SOCKET_TIMEOUT)
                raise NotYet(f"{name}() failed: {message} ({error!r})") from error
        raise NotYet(f"{name}() raised {type(error).__name__}: {error}") from error
    finally:
        socket.setdefaulttimeout(previous)


# -- the nbgrader format, read without nbgrader ---------------------------------------------


def _nbgrader(cell: dict) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def _text(cell: dict) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else source


def cell_key(cell: dict) -> str | None:
    """How a cell is found again in a submission: its nbgrader ``grade_id``, else its id."""
    return _nbgrader(cell).get("grade_id") or cell.get("id")


def is_test(cell: dict) -> bool:
    """An autograded test cell: code, graded, not a learner's answer."""
    meta = _nbgrader(cell)
    return bool(meta.get("grade")) and not meta.get("solution") and cell["cell_type"] == "code"


def is_manual(cell: dict) -> bool:
    """An answer a person grades (a reflection question): graded and written by the learner."""
    meta = _nbgrader(cell)
    return bool(meta.get("grade")) and bool(meta.get("solution")) and not is_test(cell)


def is_answer(cell: dict) -> bool:
    """A cell the learner writes in (solution cells, graded or not)."""
    return bool(_nbgrader(cell).get("solution"))


def strip_hidden_tests(source: str) -> str:
    """``source`` without its ``### BEGIN HIDDEN TESTS`` … ``### END HIDDEN TESTS`` lines."""
    lines, hidden = [], False
    for line in source.split("\n"):
        if "BEGIN HIDDEN TESTS" in line:
            hidden = True
        elif "END HIDDEN TESTS" in line:
            hidden = False
        elif not hidden:
            lines.append(line)
    return "\n".join(lines)


def exercises(source: Path) -> dict[str, Path]:
    """The source notebooks under ``source``: ``{"08-pop3-uidl": …/08-pop3-uidl.ipynb}``."""
    return {
        path.stem: path
        for path in sorted(source.glob("*/*.ipynb"))
        if path.parent.name == path.stem
    }


# -- generating exercises/ and solutions/ with nbgrader --------------------------------------


def generate(root: Path | None = None, out: Path | None = None) -> list[Path]:
    """Write ``exercises/`` and ``solutions/`` from ``source/`` with nbgrader; the files.

    ``root`` holds ``source/`` (default: :func:`course_root`); ``out`` receives
    ``exercises/`` and ``solutions/`` (default: ``root``). Each exercise folder is
    replaced whole; the folders' README.md stay. Nothing in the output depends on the
    time, the machine or chance, so a second run changes nothing.
    """
    try:
        from nbgrader.converters import GenerateAssignment, GenerateSolution
        from nbgrader.coursedir import CourseDirectory
        from nbgrader.preprocessors import (
            ClearHiddenTests,
            ClearMarkScheme,
            ClearOutput,
            IncludeHeaderFooter,
            LockCells,
        )
        from nbgrader.utils import capture_log, temp_attrs
        from traitlets.config import Config
    except ImportError as error:
        raise RuntimeError(
            "generating exercises needs nbgrader: pip install -e '.[grading]'"
        ) from error
    root = (root or course_root()).resolve()
    out = (out or root).resolve()
    _alembic_in_process()
    written = []
    with tempfile.TemporaryDirectory(prefix="mailkit-generate-") as scratch:
        config = Config()
        config.CourseDirectory.root = scratch
        config.CourseDirectory.source_directory = str(root / SOURCE)
        config.CourseDirectory.release_directory = str(out / EXERCISES)
        config.CourseDirectory.solution_directory = str(out / SOLUTIONS)
        config.CourseDirectory.db_url = f"sqlite:///{scratch}/gradebook.db"
        config.ClearSolutions.code_stub = {"python": CODE_STUB}
        # generate_solution keeps the solutions and the visible tests; it neither runs
        # the notebook (outputs would hold ports and times) nor shows hidden tests.
        config.GenerateSolution.preprocessors = [
            IncludeHeaderFooter,
            LockCells,
            ClearOutput,
            ClearMarkScheme,
            ClearHiddenTests,
        ]
        coursedir = CourseDirectory(config=config)
        for exercise in exercises(root / SOURCE):
            for converter in (GenerateAssignment, GenerateSolution):
                with temp_attrs(coursedir, assignment_id=exercise):
                    app = converter(coursedir=coursedir, config=config)
                    app.force = True
                    result = capture_log(app)
                if not result["success"]:
                    raise RuntimeError(f"nbgrader could not generate {exercise}:\n{result['log']}")
            for folder in (EXERCISES, SOLUTIONS):
                for path in sorted((out / folder / exercise).rglob("*")):
                    if path.is_file():
                        path.chmod(0o644)
                        written.append(path)
    return written


def _alembic_in_process() -> None:
    """Let nbgrader's new gradebook read its schema version without a subprocess.

    ``nbgrader.api.get_alembic_version`` runs the ``alembic heads`` command, which must be
    on PATH and takes seconds to start; alembic's own Python API gives the same answer
    from the same migration scripts.
    """
    import nbgrader
    import nbgrader.api
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory(str(Path(nbgrader.__file__).parent / "alembic"))
    head = scripts.get_current_head()
    nbgrader.api.get_alembic_version = lambda: head


def differences(root: Path | None = None) -> list[str]:
    """Files of ``exercises/`` and ``solutions/`` that differ from a fresh generation."""
    root = (root or course_root()).resolve()
    with tempfile.TemporaryDirectory(prefix="mailkit-regenerate-") as scratch:
        fresh = Path(scratch)
        generate(root, fresh)
        names = set(exercises(root / SOURCE))
        found = []
        for folder in (EXERCISES, SOLUTIONS):
            committed = {
                p.relative_to(root / folder)
                for p in (root / folder).rglob("*")
                if p.is_file() and p.relative_to(root / folder).parts[0] in names
            }
            generated = {
                p.relative_to(fresh / folder) for p in (fresh / folder).rglob("*") if p.is_file()
            }
            extra = {p for p in (root / folder).iterdir() if p.is_dir() and p.name not in names}
            found += [f"{folder}/{p.name}/ (no such exercise in {SOURCE}/)" for p in sorted(extra)]
            for path in sorted(committed | generated):
                ours, theirs = root / folder / path, fresh / folder / path
                if (
                    not ours.exists()
                    or not theirs.exists()
                    or not filecmp.cmp(ours, theirs, shallow=False)
                ):
                    found.append(f"{folder}/{path}")
        return found


# -- restoring a submission's test cells ------------------------------------------------------


def _reset(cell: dict) -> dict:
    cell = copy.deepcopy(cell)
    if cell["cell_type"] == "code":
        cell["outputs"], cell["execution_count"] = [], None
    return cell


def restore(submission: dict, source: dict) -> tuple[dict, list[str]]:
    """The notebook to grade: ``submission`` with the source's cells put back; and notes.

    Every cell of the source that the learner does not write (tests with their hidden
    part, set-up, prose) comes from the source, found by its ``grade_id`` or cell id,
    edited or deleted in the submission or not; the learner's answers come from the
    submission (an answer cell that was deleted comes back as the empty stub). Cells the
    learner added stay, after the source cell they followed. Outputs are cleared.
    """
    notes = []
    known = {cell_key(c) for c in source["cells"]}
    theirs: dict[str, dict] = {}
    extras: dict[str | None, list[dict]] = {}
    previous: str | None = None
    for cell in submission.get("cells", []):
        key = cell_key(cell)
        if key in known and key not in theirs:
            theirs[key] = cell
            previous = key
        elif cell.get("cell_type") in ("code", "markdown") and _text(cell).strip():
            plain = copy.deepcopy(cell)
            plain.get("metadata", {}).pop("nbgrader", None)
            extras.setdefault(previous, []).append(_reset(plain))
    cells = list(extras.get(None, []))
    for cell in source["cells"]:
        key = cell_key(cell)
        mine = theirs.get(key)
        if is_answer(cell):
            if mine is None:
                notes.append(f"answer cell {key} was deleted: graded as left blank")
                stub = _reset(cell)
                stub["source"] = CODE_STUB if cell["cell_type"] == "code" else "YOUR ANSWER HERE"
                cells.append(stub)
            else:
                answer = _reset(cell)
                answer["source"] = _text(mine)
                cells.append(answer)
        else:
            if is_test(cell):
                if mine is None:
                    notes.append(f"test cell {key} was deleted: restored from the source")
                elif _text(mine).strip() not in (
                    _text(cell).strip(),
                    strip_hidden_tests(_text(cell)).strip(),
                ):
                    notes.append(f"test cell {key} was edited: restored from the source")
            cells.append(_reset(cell))
        cells.extend(extras.get(key, []))
    for cell in cells:
        if (is_answer(cell) or cell_key(cell) not in known) and cell["cell_type"] == "code":
            changed = sorted(_assigned(_text(cell)) & CHECKERS)
            if changed:
                notes.append(
                    f"cell {cell_key(cell)} redefines {', '.join(changed)}: "
                    "the tests may not mean what they say — check this notebook by hand"
                )
    notebook = copy.deepcopy({k: v for k, v in source.items() if k != "cells"})
    notebook["cells"] = cells
    return notebook, notes


#: The names the test cells judge with; a learner's cell has no business redefining them.
CHECKERS = frozenset({"verdict", "attempt", "NotYet"})


def _assigned(source: str) -> set[str]:
    """The names a cell's code binds (assignments, def, class, import, for, with)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
    return names


# -- running one notebook (in a worker process) -----------------------------------------------


@dataclass
class CellOutcome:
    """What happened to one cell while grading: ``ok``, ``error``, ``timeout`` or ``not run``."""

    key: str
    status: str
    message: str = ""


_GUARD = """\
# mailkit-edu grade: this notebook may read its own folder, not other submissions.
import os as _os, sys as _sys
def _mailkit_grade_guard(_denied=tuple({denied!r}), _own={own!r}, _code={code!r}):
    # Where Python finds its modules stays readable, even inside a denied folder.
    _code = tuple(_os.path.realpath(p) + _os.sep for p in [*_sys.path, *_code] if p)
    def hook(event, args):
        if event not in ("open", "os.listdir", "os.scandir", "os.chdir", "glob.glob"):
            return
        path = args[0] if args else None
        if path is None or isinstance(path, int):
            return
        try:
            full = _os.path.realpath(_os.fsdecode(path)) + _os.sep
        except (TypeError, ValueError):
            return
        if full.startswith(_denied) and not full.startswith((_own, *_code)):
            print(f"{{REFUSED}} {{full}}", file=_sys.__stderr__, flush=True)
            raise PermissionError(
                "mailkit-edu grade: a graded notebook may read only its own folder, "
                f"not {{_os.fsdecode(path)}}"
            )
    _sys.addaudithook(hook)
_mailkit_grade_guard()
del _mailkit_grade_guard
"""


def _guard_startup(ipython_dir: Path, denied: Iterable[str], own: str) -> None:
    """An IPython startup file that installs the read guard before any cell runs."""
    startup = ipython_dir / "profile_default" / "startup"
    startup.mkdir(parents=True, exist_ok=True)
    denied = [os.path.realpath(d) + os.sep for d in denied]
    code = [str(Path(__file__).resolve().parent)]  # this package, wherever it is installed
    text = _GUARD.format(denied=denied, own=os.path.realpath(own) + os.sep, code=code)
    text = text.replace("{REFUSED}", REFUSED)
    (startup / "00-mailkit-grade-guard.py").write_text(text, encoding="utf-8")


def _error_text(outputs: list[dict]) -> str:
    for output in outputs:
        if output.get("output_type") == "error":
            name, value = output.get("ename", "Error"), output.get("evalue", "")
            if name == "NotYet":
                return value
            return f"{name}: {value}".strip()
    return ""


def _cell_limit(cell: Any, job: dict, deadline: float) -> int:
    """Seconds a cell may run: ``cell_timeout``, but the instructor's set-up cells (locked,
    not graded) may take the notebook's time; once that is spent, each cell left gets a
    second. The same in both engines."""
    meta = cell.get("metadata", {}).get("nbgrader", {})
    mine = job["cell_timeout"] if meta.get("grade") or not meta.get("locked") else job["timeout"]
    return max(1, int(min(mine, deadline - time.monotonic())))


def _too_slow(job: dict) -> str:
    """What a cell that timed out is told (the same with either engine)."""
    limits = f"{job['cell_timeout']:g} s a cell, {job['timeout']:g} s the notebook"
    return f"did not finish in time (limits: {limits}) — an endless loop, or a reply never read?"


def _execute(job: dict) -> None:
    """Run ``job["notebook"]`` cell by cell, one JSON line per cell to ``job["log"]``."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    class CappedClient(NotebookClient):
        """nbclient that keeps at most ``OUTPUT_LIMIT`` characters of output per cell."""

        kept: dict[int, int] = {}  # noqa: RUF012 - one client per process

        def output(self, outs, msg, display_id, cell_index):  # type: ignore[override]
            content = msg.get("content", {})
            size = len(content.get("text", "")) + len(json.dumps(content.get("data", {})))
            used = self.kept.get(cell_index, 0)
            if used > OUTPUT_LIMIT and msg["msg_type"] in ("stream", "display_data"):
                return None
            self.kept[cell_index] = used + size
            out = super().output(outs, msg, display_id, cell_index)
            if used + size > OUTPUT_LIMIT and msg["msg_type"] == "stream":
                out_text = content.get("text", "")[: max(0, OUTPUT_LIMIT - used)]
                if out is not None:
                    out["text"] = out_text + "\n… output cut by mailkit-edu grade …\n"
            return out

    notebook = nbformat.reads(Path(job["notebook"]).read_text(encoding="utf-8"), as_version=4)
    deadline = time.monotonic() + job["timeout"]
    cell_timeout = job["cell_timeout"]
    client = CappedClient(
        notebook,
        timeout=int(cell_timeout),
        kernel_name="python3",
        allow_errors=True,
        interrupt_on_timeout=True,
        error_on_timeout={
            "ename": "CellTimeoutError",
            "evalue": _too_slow(job),
            "traceback": [f"CellTimeoutError: {_too_slow(job)}"],
        },
        resources={"metadata": {"path": job["cwd"]}},
        shutdown_kernel="immediate",  # its results are in; nothing to wait for
    )

    def cell_limit(cell: Any) -> int:
        return _cell_limit(cell, job, deadline)

    replies: dict[int, str] = {}

    def on_executed(cell: Any, cell_index: int, execute_reply: dict) -> None:
        replies[cell_index] = execute_reply.get("content", {}).get("ename", "")

    client.timeout_func = cell_limit
    client.on_cell_executed = on_executed
    log = open(job["log"], "a", encoding="utf-8")  # noqa: SIM115 - closed below

    def record(cell: dict, status: str, message: str = "") -> None:
        outcome = CellOutcome(cell_key(cell) or "", status, message)
        log.write(json.dumps(asdict(outcome)) + "\n")
        log.flush()

    try:
        with client.setup_kernel(env={**os.environ, "IPYTHONDIR": job["ipython_dir"]}):
            pid = getattr(getattr(client.km, "provisioner", None), "pid", None)
            log.write(json.dumps({"kernel_pid": pid}) + "\n")
            log.flush()
            stopped = ""
            for index, cell in enumerate(notebook.cells):
                if cell.cell_type != "code":
                    continue
                if stopped:
                    record(cell, "not run", stopped)
                    continue
                try:
                    client.execute_cell(cell, index)
                except DeadKernelError:
                    stopped = (
                        "the kernel died (a crash, os._exit or out of memory) in an earlier cell"
                    )
                    record(cell, "error", KERNEL_DIED)
                    continue
                except CellTimeoutError:
                    record(cell, "timeout", _too_slow(job))
                    continue
                error = _error_text(cell.outputs)
                if replies.get(index) == "CellTimeoutError":
                    record(cell, "timeout", _too_slow(job))
                elif error:
                    record(cell, "error", error)
                else:
                    record(cell, "ok")
    finally:
        log.close()
        Path(job["graded"]).write_text(nbformat.writes(notebook), encoding="utf-8")


def _autograde_or_execute(job: dict) -> None:
    """Grade with nbgrader's autograde; if it cannot finish, with :func:`_execute`."""
    try:
        _autograde(job)
    except Exception as error:
        with open(job["log"], "a", encoding="utf-8") as log:
            text = str(error).strip()
            why = "its kernel died" if "Kernel died" in text else text.splitlines()[-1][:300]
            note = (
                f"nbgrader's autograde gave up ({why}); "
                "graded by mailkit-edu's own runner, with the same rules"
            )
            log.write(json.dumps({"note": note}) + "\n")
        _execute(job)


def _autograde(job: dict) -> None:
    """nbgrader's ``generate_assignment`` and ``autograde`` in ``job["course"]``; the
    scores from its gradebook, one JSON line per graded cell to ``job["log"]``."""
    import nbformat
    from nbgrader.api import Gradebook
    from nbgrader.converters import Autograde, GenerateAssignment
    from nbgrader.coursedir import CourseDirectory
    from nbgrader.utils import capture_log, temp_attrs
    from traitlets.config import Config

    _alembic_in_process()
    os.environ["IPYTHONDIR"] = job["ipython_dir"]  # the read guard, in nbgrader's kernel too
    course, exercise, student = Path(job["course"]), job["exercise"], job["student"]
    config = Config()
    config.CourseDirectory.root = str(course)
    config.CourseDirectory.db_url = f"sqlite:///{course}/gradebook.db"
    config.Execute.timeout = int(job["cell_timeout"])
    deadline = time.monotonic() + job["timeout"]
    config.Execute.timeout_func = lambda cell: _cell_limit(cell, job, deadline)
    config.Execute.interrupt_on_timeout = True
    config.OverwriteCells.add_missing_cells = True
    config.LimitOutput.max_lines = 200
    coursedir = CourseDirectory(config=config)
    for converter, student_id in ((GenerateAssignment, "."), (Autograde, student)):
        with temp_attrs(coursedir, assignment_id=exercise, student_id=student_id):
            app = converter(coursedir=coursedir, config=config)
            app.force = True
            result = capture_log(app)
        if not result["success"]:
            raise RuntimeError(f"{result.get('log', '')}\n{result.get('error') or ''}")
    graded = course / "autograded" / student / exercise / f"{exercise}.ipynb"
    notebook = nbformat.read(graded, as_version=4)
    cells = {cell_key(c): c for c in notebook.cells}
    with Gradebook(config.CourseDirectory.db_url) as gradebook, open(job["log"], "a") as log:
        found = gradebook.find_submission_notebook(exercise, exercise, student)
        for grade in found.grades:
            if grade.needs_manual_grade and grade.cell.cell_type == "markdown":
                continue
            outputs = cells.get(grade.name, {}).get("outputs", [])
            timeout = any(o.get("ename") == "CellTimeoutError" for o in outputs)
            if grade.auto_score == grade.max_score:
                outcome = CellOutcome(grade.name, "ok")
            elif timeout:
                outcome = CellOutcome(grade.name, "timeout", _too_slow(job))
            else:
                outcome = CellOutcome(grade.name, "error", _error_text(outputs) or "no points")
            log.write(json.dumps(asdict(outcome)) + "\n")
    for cell in notebook.cells:  # nbgrader cuts lines, not one long line
        for output in cell.get("outputs", []):
            if len(output.get("text", "")) > OUTPUT_LIMIT:
                output["text"] = (
                    output["text"][:OUTPUT_LIMIT] + "\n… output cut by mailkit-edu grade …\n"
                )
    Path(job["graded"]).write_text(nbformat.writes(notebook), encoding="utf-8")


# -- grading a class --------------------------------------------------------------------------


@dataclass
class Submission:
    """One notebook of one student, and where its grading happens."""

    student: str
    exercise: str
    path: Path
    notes: list[str] = field(default_factory=list)


def find_submissions(
    folder: Path, known: Iterable[str], skip: Iterable[Path] = ()
) -> tuple[list[Submission], list[Submission]]:
    """Every ``<student>/…/<exercise>.ipynb`` under ``folder``; and the notebooks not graded.

    Both nbgrader's ``submitted/<student>/<exercise>/<exercise>.ipynb`` and a flat
    ``<student>/<exercise>.ipynb`` are found. Folders in ``skip`` (the output folder, if
    it is inside) are no students. A second copy of one exercise is not graded.
    """
    known, skip = set(known), {Path(p).resolve() for p in skip}
    found, unknown = [], []
    for student in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if student.resolve() in skip:
            continue
        graded: dict[str, Path] = {}
        for path in sorted(student.rglob("*.ipynb")):
            if ".ipynb_checkpoints" in path.parts:
                continue
            item = Submission(student.name, path.stem, path)
            if path.stem not in known:
                item.notes.append(f"{path.name} is not an exercise of this course")
                unknown.append(item)
            elif path.stem in graded:
                first = graded[path.stem].relative_to(student)
                item.notes.append(
                    f"{path.relative_to(student)} is a second copy: {first} was graded"
                )
                unknown.append(item)
            else:
                graded[path.stem] = path
                found.append(item)
    return found, unknown


def _kill(pid: int) -> None:
    """Kill process ``pid`` and its process group (where there are groups: POSIX)."""
    with contextlib.suppress(ProcessLookupError, PermissionError, OSError):
        if hasattr(os, "killpg"):
            os.killpg(pid, signal.SIGKILL)
        else:  # Windows: no process groups, no SIGKILL
            os.kill(pid, signal.SIGTERM)


def _run_worker(job: dict, hard_limit: float) -> str:
    """Run one notebook in a worker process; kill it (and its kernel) at ``hard_limit``."""
    # This file as a script: a worker needs nbclient, not the package and its servers.
    command = [sys.executable, str(Path(__file__).resolve()), "_execute", json.dumps(job)]
    with open(job["stderr"], "wb") as errors:
        process = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=errors,
            start_new_session=True,
            cwd=job["cwd"],
        )
        try:
            process.wait(hard_limit)
            return ""
        except subprocess.TimeoutExpired:
            _kill(process.pid)
            process.wait()
    for line in Path(job["log"]).read_text(encoding="utf-8").splitlines():
        pid = json.loads(line).get("kernel_pid")
        if pid:
            _kill(pid)
    return f"stopped after {hard_limit:g} s (the notebook did not give up the kernel)"


def _outcomes(log: Path) -> tuple[dict[str, CellOutcome], list[str]]:
    """The cells' outcomes a worker wrote to ``log``, and its notes."""
    outcomes, notes = {}, []
    if log.exists():
        for line in log.read_text(encoding="utf-8").splitlines():
            data = json.loads(line)
            if "key" in data:
                outcomes[data["key"]] = CellOutcome(**data)
            elif "note" in data:
                notes.append(data["note"])
    return outcomes, notes


def _grade_one(
    item: Submission,
    source_path: Path,
    source: dict,
    scratch: Path,
    out: Path,
    deny: list[str],
    cell_timeout: float,
    timeout: float,
    engine: str,
) -> list[dict]:
    """Grade one submission in a folder of its own under ``scratch``; its score rows."""
    own = Path(tempfile.mkdtemp(prefix=f"{item.student}-{item.exercise}-", dir=scratch))
    try:
        submitted = _read_notebook(item)
        outcomes: dict[str, CellOutcome] = {}
        if submitted is not None:
            notebook, notes = restore(submitted, source)
            item.notes.extend(notes)
            job = _job(item, own, out, engine, timeout, cell_timeout)
            Path(job["notebook"]).write_text(json.dumps(notebook), encoding="utf-8")
            _guard_startup(Path(job["ipython_dir"]), deny, str(own))
            if engine == "nbgrader":
                _course_folder(Path(job["course"]), item, source_path, submitted)
            stopped = _run_worker(job, timeout + KILL_GRACE)
            outcomes, notes = _outcomes(Path(job["log"]))
            if not outcomes and not stopped:
                # The kernel did not start: most often a port that another kernel, started
                # in the same instant, took first ("Address already in use"). Once more.
                Path(job["log"]).write_text("", encoding="utf-8")
                stopped = _run_worker(job, timeout + KILL_GRACE)
                outcomes, notes = _outcomes(Path(job["log"]))
            if stopped:
                item.notes.append(stopped)
            item.notes.extend(notes)
            item.notes.extend(_trouble(outcomes, Path(job["stderr"])))
        return _rows(item, source, outcomes, readable=submitted is not None)
    finally:
        shutil.rmtree(own, ignore_errors=True)


def _read_notebook(item: Submission) -> dict | None:
    """The submitted notebook's JSON, or None (with a note) if it cannot be read."""
    try:
        submitted = json.loads(item.path.read_text(encoding="utf-8"))
        if not isinstance(submitted, dict):
            raise ValueError("not a notebook")
        return submitted
    except (OSError, ValueError, UnicodeDecodeError) as error:
        item.notes.append(f"the notebook could not be read ({error}): every test scores 0")
        return None


def _job(
    item: Submission, own: Path, out: Path, engine: str, timeout: float, cell_timeout: float
) -> dict:
    """What a worker needs to grade ``item`` in ``own`` (its files are made here)."""
    work = own / "work"
    work.mkdir()
    graded = out / "graded" / item.student / f"{item.exercise}.ipynb"
    graded.parent.mkdir(parents=True, exist_ok=True)
    (own / "cells.jsonl").touch()
    return {
        "notebook": str(work / f"{item.exercise}.ipynb"),
        "cwd": str(work),
        "log": str(own / "cells.jsonl"),
        "stderr": str(own / "stderr.txt"),
        "graded": str(graded),
        "ipython_dir": str(own / "ipython"),
        "timeout": timeout,
        "cell_timeout": cell_timeout,
        "engine": engine,
        "student": item.student,
        "exercise": item.exercise,
        "course": str(own / "course"),
    }


def _course_folder(course: Path, item: Submission, source_path: Path, submitted: dict) -> None:
    """nbgrader's course layout for one notebook: ``source/`` and ``submitted/``."""
    for folder, name in ((SOURCE, "."), ("submitted", item.student)):
        (course / folder / name / item.exercise).mkdir(parents=True)
    shutil.copy(source_path, course / SOURCE / item.exercise)
    target = course / "submitted" / item.student / item.exercise / f"{item.exercise}.ipynb"
    target.write_text(json.dumps(submitted), encoding="utf-8")


def _trouble(outcomes: dict[str, CellOutcome], stderr: Path) -> list[str]:
    """Notes on what went wrong in a run: a dead kernel, no run at all, refused reads."""
    notes = []
    errors = stderr.read_text(encoding="utf-8", errors="replace") if stderr.exists() else ""
    died = [o.key for o in outcomes.values() if o.message == KERNEL_DIED]
    if died:
        notes.append(f"the kernel died while cell {died[0]} ran; the cells after it did not run")
    if not outcomes:
        notes.append(f"the notebook did not run: {errors[-2000:].strip() or 'no output'}")
    refused = sorted(
        {
            line.removeprefix(REFUSED).strip().rstrip(os.sep)
            for line in errors.splitlines()
            if line.startswith(REFUSED)
        }
    )
    if refused:
        notes.append(
            f"it tried to read {len(refused)} path(s) outside its own folder (refused): "
            + ", ".join(refused[:3])
        )
    return notes


def _rows(
    item: Submission, source: dict, outcomes: dict[str, CellOutcome], readable: bool
) -> list[dict]:
    """One score row per graded cell of the source: its points by its outcome."""
    rows = []
    for cell in source["cells"]:
        if not (is_test(cell) or is_manual(cell)):
            continue
        key = cell_key(cell)
        points = float(_nbgrader(cell).get("points", 0))
        row = {"student": item.student, "exercise": item.exercise, "cell": key, "max": points}
        if is_manual(cell) and not readable:
            row.update(points=0.0, status="error", note="the notebook could not be read")
        elif is_manual(cell):
            row.update(
                points=None, status="needs manual grading", note="a person grades this answer"
            )
        else:
            outcome = outcomes.get(key, CellOutcome(key, "not run", "the grader did not reach it"))
            passed = outcome.status == "ok"
            row.update(
                points=points if passed else 0.0, status=outcome.status, note=outcome.message
            )
        rows.append(row)
    return rows


def grade(
    submissions: Path,
    out: Path,
    *,
    source: Path | None = None,
    jobs: int = 2,
    timeout: float = NOTEBOOK_TIMEOUT,
    cell_timeout: float = CELL_TIMEOUT,
    engine: str = "auto",
    progress: Callable[[str], None] | None = None,
) -> Any:
    """Grade every notebook under ``submissions``; write ``out/scores.csv`` and feedback.

    Returns the scores as a pandas DataFrame (one row per student, exercise and graded
    cell). A notebook that hangs, crashes its kernel, deletes cells, prints megabytes or
    reads other students' files is graded as far as it goes, with a note; it never
    stops the rest of the batch. ``engine``: ``"nbgrader"`` (nbgrader's autograde and
    gradebook, one course folder per notebook), ``"builtin"`` (the same rules without
    nbgrader) or ``"auto"`` (nbgrader where it is installed).
    """
    import pandas as pd

    submissions, out = Path(submissions).resolve(), Path(out).resolve()
    source = (source or course_root() / SOURCE).resolve()
    paths = exercises(source)
    sources = {name: json.loads(path.read_text(encoding="utf-8")) for name, path in paths.items()}
    if engine == "auto":
        engine = "nbgrader" if importlib.util.find_spec("nbgrader") else "builtin"
    if engine not in ("nbgrader", "builtin"):
        raise ValueError(f"engine is 'auto', 'nbgrader' or 'builtin', not {engine!r}")
    if not sources:
        raise RuntimeError(f"no source notebooks in {source} (source/<exercise>/<exercise>.ipynb)")
    found, unknown = find_submissions(submissions, sources, skip=[out])
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="mailkit-grade-") as scratch:
        # Other students' notebooks, the hidden tests and the solutions are out of reach.
        deny = [str(submissions), str(out), scratch, str(source), str(source.parent / SOLUTIONS)]

        def one(item: Submission) -> list[dict]:
            result = _grade_one(
                item,
                paths[item.exercise],
                sources[item.exercise],
                Path(scratch),
                out,
                deny,
                cell_timeout,
                timeout,
                engine,
            )
            if progress:
                got = sum(r["points"] or 0 for r in result)
                progress(
                    f"{item.student} {item.exercise}: {got:g}/{sum(r['max'] for r in result):g}"
                )
            return result

        with concurrent.futures.ThreadPoolExecutor(max(1, jobs)) as pool:
            for result in pool.map(one, found):
                rows.extend(result)
    columns = ["student", "exercise", "cell", "points", "max", "status", "note"]
    scores = pd.DataFrame(rows, columns=columns)
    scores.to_csv(out / "scores.csv", index=False)
    totals(scores).to_csv(out / "totals.csv")
    _write_feedback(out / "feedback", scores, found, unknown)
    return scores


def totals(scores: Any) -> Any:
    """Points per student (rows) and exercise (columns), with a total column."""
    table = scores.pivot_table(
        index="student", columns="exercise", values="points", aggfunc="sum", fill_value=0.0
    )
    table["total"] = table.sum(axis=1)
    return table


def _write_feedback(
    folder: Path, scores: Any, found: list[Submission], unknown: list[Submission]
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    students = sorted({s.student for s in found} | {s.student for s in unknown})
    for student in students:
        lines = [f"# Feedback for {student}", ""]
        for item in [s for s in found if s.student == student]:
            mine = scores[(scores.student == student) & (scores.exercise == item.exercise)]
            got, most = mine["points"].fillna(0).sum(), mine["max"].sum()
            lines += [f"## {item.exercise} ({chapter_of(item.exercise)}): {got:g} / {most:g}", ""]
            for note in item.notes:
                lines.append(f"- Note: {note}")
            for row in mine.itertuples():
                if row.status == "needs manual grading":
                    lines.append(f"- {row.cell}: needs manual grading (up to {row.max:g} points)")
                elif row.status == "ok":
                    lines.append(f"- {row.cell}: ✓ {row.points:g} / {row.max:g}")
                else:
                    lines.append(f"- {row.cell}: ✗ 0 / {row.max:g} — {row.status}: {row.note}")
            lines.append("")
        for item in [s for s in unknown if s.student == student]:
            lines.append(f"- Not graded: {'; '.join(item.notes)}")
        (folder / f"{student}.md").write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")


# -- command line ----------------------------------------------------------------------------


def _skip_slow_imports() -> None:
    """Make this process skip jsonschema's optional RFC 3987 URI checker.

    It builds its grammars when imported (2-3 s on every nbformat or nbgrader import
    here); notebooks have no URI fields to check. Only for this module's own processes.
    """
    sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mailkit_edu.grading generate [--check]`` (``make exercises``)."""
    _skip_slow_imports()
    parser = argparse.ArgumentParser(prog="python -m mailkit_edu.grading")
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("generate", help="write exercises/ and solutions/ from source/")
    make.add_argument("--check", action="store_true", help="change nothing; fail on any difference")
    make.add_argument("--root", type=Path, default=None, help="the folder that holds source/")
    worker = commands.add_parser("_execute", help=argparse.SUPPRESS)
    worker.add_argument("job")
    args = parser.parse_args(argv)
    if args.command == "_execute":
        job = json.loads(args.job)
        if job.get("engine") == "nbgrader":
            _autograde_or_execute(job)
        else:
            _execute(job)
        return 0
    if args.check:
        found = differences(args.root)
        for name in found:
            print(f"differs from its source: {name}", file=sys.stderr)
        if found:
            print("run `make exercises` and commit the result", file=sys.stderr)
        return 1 if found else 0
    for path in generate(args.root):
        print(path)
    return 0


if __name__ == "__main__":
    # Run as a file (a worker), Python put this folder first on sys.path: take it off,
    # so that no module of the package (smtp, config, ...) hides one of the same name.
    here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    sys.exit(main())
