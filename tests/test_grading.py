"""Graded exercises: one source, two outputs, friendly verdicts, and grading a class.

The source notebooks in ``source/`` generate ``exercises/`` and ``solutions/`` unchanged
(nbgrader); every solution passes all its tests, hidden ones included; every blank exercise
fails every graded test (nbgrader's ``validate`` and ``validate --invert``); and a batch of
synthetic submissions — right, wrong, partial, hanging, crashing, tampered, printing
megabytes, reading other students' files — gets the expected scores from
``mailkit-edu grade``, within its time limits.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from mailkit_edu import grading
from mailkit_edu.course import CHAPTERS

# Grading a class runs a couple of dozen notebooks, each in a kernel of its own.
pytestmark = pytest.mark.timeout(600)

ROOT = Path(__file__).resolve().parent.parent
SOURCES = grading.exercises(ROOT / grading.SOURCE)
NAMES = sorted(SOURCES)


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def text(cell: dict) -> str:
    return "".join(cell["source"])


def cell(notebook: dict, key: str) -> dict:
    return next(c for c in notebook["cells"] if grading.cell_key(c) == key)


def graded_tests(notebook: dict) -> list[dict]:
    return [c for c in notebook["cells"] if grading.is_test(c)]


# -- the source and what it generates -----------------------------------------------------------


def test_regenerating_exercises_and_solutions_changes_nothing():
    """`make exercises` on the committed source writes exactly the committed files."""
    result = subprocess.run(
        [sys.executable, "-m", "mailkit_edu.grading", "generate", "--check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.parametrize("name", NAMES)
def test_each_exercise_is_a_graded_nbgrader_notebook_of_a_chapter(name):
    """Named after a chapter; several test cells with points, hidden tests, one manually
    graded reflection, a lab started and stopped; generated outputs without solutions
    or hidden tests; committed without outputs."""
    assert any(name.startswith(f"{c.number:02d}-") for c in CHAPTERS if c.number > 0)
    source = load(SOURCES[name])
    tests = graded_tests(source)
    assert len(tests) >= 4 and all(grading._nbgrader(c)["points"] > 0 for c in tests)
    assert sum("BEGIN HIDDEN TESTS" in text(c) for c in tests) >= 2
    manual = [c for c in source["cells"] if grading.is_manual(c)]
    assert len(manual) == 1 and manual[0]["cell_type"] == "markdown"
    code = "\n".join(text(c) for c in source["cells"] if c["cell_type"] == "code")
    assert "start_lab(" in code and "lab.stop()" in code and "verdict(" in code
    keys = [grading.cell_key(c) for c in source["cells"]]
    assert len(keys) == len(set(keys)) and all(keys)

    exercise = load(ROOT / grading.EXERCISES / name / f"{name}.ipynb")
    solution = load(ROOT / grading.SOLUTIONS / name / f"{name}.ipynb")
    for generated in (exercise, solution):
        assert [grading.cell_key(c) for c in generated["cells"]] == keys
        for c in generated["cells"]:
            assert "HIDDEN TESTS" not in text(c)
            if c["cell_type"] == "code":
                assert c["outputs"] == [] and c["execution_count"] is None
    assert not any("BEGIN SOLUTION" in text(c) for c in exercise["cells"])
    for c in exercise["cells"]:
        if grading.is_answer(c) and c["cell_type"] == "code":
            assert "raise NotImplementedError" in text(c)


# -- restoring the tests of a submission ---------------------------------------------------------


def test_restore_puts_back_edited_and_deleted_tests_and_keeps_answers_and_extra_cells():
    """Edited and deleted test cells come back from the source (hidden part included),
    with a note each; answers and the learner's own cells stay where they were."""
    name = "08-pop3-uidl"
    source = load(SOURCES[name])
    submitted = load(ROOT / grading.EXERCISES / name / f"{name}.ipynb")
    cell(submitted, "answer-list-uidls")["source"] = "def list_uidls(*args):\n    return {}"
    cell(submitted, "test-list-uidls")["source"] = "pass  # all good"
    submitted["cells"].remove(cell(submitted, "test-fetch-third"))
    position = submitted["cells"].index(cell(submitted, "answer-list-uidls"))
    mine = {"cell_type": "code", "id": "mine", "metadata": {}, "outputs": [], "source": "x = 1"}
    submitted["cells"].insert(position + 1, mine)

    restored, notes = grading.restore(submitted, source)

    keys = [grading.cell_key(c) for c in restored["cells"]]
    assert keys[keys.index("answer-list-uidls") + 1] == "mine"
    assert [k for k in keys if k != "mine"] == [grading.cell_key(c) for c in source["cells"]]
    assert text(cell(restored, "answer-list-uidls")) == "def list_uidls(*args):\n    return {}"
    assert text(cell(restored, "test-list-uidls")) == text(cell(source, "test-list-uidls"))
    assert "BEGIN HIDDEN TESTS" in text(cell(restored, "test-fetch-third"))
    assert notes == [
        "test cell test-list-uidls was edited: restored from the source",
        "test cell test-fetch-third was deleted: restored from the source",
    ]


def test_an_answer_that_redefines_the_checks_is_flagged_for_a_person():
    """A learner's cell that rebinds verdict (or attempt, NotYet) gets a note: its
    tests may pass for the wrong reason, as with nbgrader."""
    name = "08-pop3-uidl"
    source = load(SOURCES[name])
    submitted = load(ROOT / grading.EXERCISES / name / f"{name}.ipynb")
    cell(submitted, "answer-fetch-new")["source"] = "def verdict(*args):\n    return True"
    _, notes = grading.restore(submitted, source)
    assert notes == [
        "cell answer-fetch-new redefines verdict: the tests may not mean what they say — "
        "check this notebook by hand"
    ]


def test_a_deleted_answer_is_graded_as_blank():
    name = "08-pop3-uidl"
    source = load(SOURCES[name])
    submitted = copy.deepcopy(source)
    submitted["cells"].remove(cell(submitted, "answer-fetch-new"))
    restored, notes = grading.restore(submitted, source)
    assert "raise NotImplementedError" in text(cell(restored, "answer-fetch-new"))
    assert notes == ["answer cell answer-fetch-new was deleted: graded as left blank"]


# -- the learner's verdicts ------------------------------------------------------------


def test_verdict_says_what_to_do_instead_of_a_bare_assertion(capsys):
    assert grading.verdict(True, "RCPT accepted", "unused") is True
    assert capsys.readouterr().out == "✓ RCPT accepted\n"
    with pytest.raises(AssertionError) as raised:
        grading.verdict(False, "unused", "RCPT before MAIL: the server answered 503")
    assert isinstance(raised.value, grading.NotYet)
    assert raised.value._render_traceback_() == [
        "\x1b[1;33m✗ Not yet: RCPT before MAIL: the server answered 503\x1b[0m"
    ]


def test_attempt_explains_a_missing_answer_and_common_socket_errors():
    def fetch_new():
        raise NotImplementedError("write your solution here")

    with pytest.raises(grading.NotYet, match=r"fetch_new\(\) is not written yet"):
        grading.attempt(fetch_new)

    def hangs():
        raise TimeoutError("timed out")

    with pytest.raises(grading.NotYet, match=r"CRLF"):
        grading.attempt(hangs)
    assert grading.attempt(lambda a, b=0: a + b, 1, b=2) == 3


# -- grading a class --------------------------------------------------------------------


def answer_sources(name: str) -> dict[str, str]:
    """The solution of each answer cell of exercise ``name``."""
    solution = load(ROOT / grading.SOLUTIONS / name / f"{name}.ipynb")
    return {grading.cell_key(c): text(c) for c in solution["cells"] if grading.is_answer(c)}


def submission(name: str, answers: dict[str, str] | None = None, after: dict | None = None) -> dict:
    """A learner's notebook of exercise ``name``: blank, with ``answers`` filled in, and
    ``after[key]`` (a cell source) added after the cell ``key``."""
    notebook = load(ROOT / grading.EXERCISES / name / f"{name}.ipynb")
    for key, source in (answers or {}).items():
        cell(notebook, key)["source"] = source
    for key, source in (after or {}).items():
        position = notebook["cells"].index(cell(notebook, key))
        extra = {"cell_type": "code", "id": f"extra-{key}", "metadata": {}, "outputs": []}
        notebook["cells"].insert(position + 1, {**extra, "execution_count": None, "source": source})
    return notebook


POP3 = "08-pop3-uidl"
DELETES = """\
def fetch_new(host, port, user, password, seen):
    client = poplib.POP3(host, port, timeout=10)
    client.user(user)
    client.pass_(password)
    new = {}
    for line in client.uidl()[1]:
        number, uidl = line.decode().split()
        if uidl not in seen:
            new[uidl] = b"\\r\\n".join(client.retr(int(number))[1])
            client.dele(int(number))
    client.quit()
    return new
"""
HANGS = "def list_uidls(host, port, user, password):\n    while True:\n        pass\n"
#: An endless loop that ignores Ctrl-C (SIGINT): only killing the kernel stops it.
STUBBORN = (
    "import signal\n\n\ndef list_uidls(host, port, user, password):\n"
    "    signal.signal(signal.SIGINT, signal.SIG_IGN)\n    while True:\n        pass\n"
)
SMTP = "02-smtp-client"


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """`mailkit-edu grade` over a class: each exercise's solution (student "right") and
    blank exercise ("blank"), and for exercise 08 one student per kind of trouble.

    First the solutions and the blanks, by the built-in runner with generous limits.
    Then, side by side: nbgrader's autograde (the default where it is installed) for
    wrong, partial, tampered and mischievous notebooks and a second copy of exercise 08's
    solution ("right-again", which must score as "right" did); the built-in runner with
    5 s a cell for a hanging notebook and files that are no notebook; and with a 20 s
    notebook limit for a kernel that ignores interrupts."""
    folder = tmp_path_factory.mktemp("submissions")
    right, smtp = answer_sources(POP3), answer_sources(SMTP)
    mail_from = '            command(f"MAIL FROM:<{sender}>", 250)\n'
    assert mail_from in smtp["answer-smtp-send"]
    rcpt_first = (
        smtp["answer-smtp-send"]
        .replace(mail_from, "")
        .replace('            command("DATA", 354)', mail_from + '            command("DATA", 354)')
    )
    snoop = f"open({str(folder / 'nbgrader' / 'right-again' / (POP3 + '.ipynb'))!r}).read()"
    solutions = {n: load(ROOT / grading.SOLUTIONS / n / f"{n}.ipynb") for n in NAMES}
    right_nb = solutions[POP3]
    students: dict[str, dict[str, dict]] = {
        "right-again": {POP3: solutions[POP3]},
        "wrong": {
            POP3: submission(POP3, {**right, "answer-fetch-new": DELETES}),
            SMTP: submission(SMTP, {**smtp, "answer-smtp-send": rcpt_first}),
        },
        "partial": {POP3: submission(POP3, {"answer-list-uidls": right["answer-list-uidls"]})},
        # Megabytes of output and a peek at another student's notebook, then a crash
        # before the fetch_new tests: graded up to the crash.
        "mischief": {
            POP3: submission(
                POP3,
                right,
                after={
                    "answer-list-uidls": f"print('spam ' * 1_000_000)\n{snoop}",
                    "answer-fetch-new": "import os\nos._exit(1)",
                },
            )
        },
    }
    tampered = submission(POP3)
    for test in graded_tests(tampered)[:-1]:
        test["source"] = "pass  # trust me"
    tampered["cells"].remove(graded_tests(tampered)[-1])
    students["tampered"] = {POP3: tampered}
    builtin = {
        "right": solutions,
        "blank": {n: load(ROOT / grading.EXERCISES / n / f"{n}.ipynb") for n in NAMES},
    }
    hanging = {
        "hanging": {POP3: submission(POP3, {**right, "answer-list-uidls": HANGS})},
        # Not a notebook; not an exercise; a second copy of one.
        "garbage": {POP3: "{not json", "homework": submission(POP3), f"copy/{POP3}": right_nb},
    }
    outs: dict[str, Path] = {}

    def start(
        name: str, group: dict, cell_timeout: int, jobs: int, timeout: int = 120
    ) -> subprocess.Popen:
        for student, notebooks in group.items():
            for exercise, notebook in notebooks.items():
                path = folder / name / student / f"{exercise}.ipynb"
                path.parent.mkdir(parents=True, exist_ok=True)
                text = notebook if isinstance(notebook, str) else json.dumps(notebook)
                path.write_text(text, encoding="utf-8")
        # The hanging batch writes its grades inside its own submissions folder.
        outs[name] = (
            folder / name / "grades" if name == "hanging" else tmp_path_factory.mktemp(name)
        )
        engine = "nbgrader" if name == "nbgrader" else "builtin"
        command = [sys.executable, "-m", "mailkit_edu", "grade", str(folder / name)]
        command += ["--out", str(outs[name]), "--engine", engine, "--jobs", str(jobs)]
        command += ["--cell-timeout", str(cell_timeout), "--timeout", str(timeout)]
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def finish(process: subprocess.Popen) -> str:
        out_text, err_text = process.communicate(timeout=500)
        assert process.returncode == 0, err_text[-3000:]
        return out_text

    # The solutions and blanks first (generous limits: their cells must never time out
    # on a busy machine), then nbgrader's batch beside the hanging notebook (3 s a cell).
    stdout = finish(start("builtin", builtin, 60, 2))
    stubborn = {"stubborn": {POP3: submission(POP3, {**right, "answer-list-uidls": STUBBORN})}}
    later = [
        start("nbgrader", students, 10, 2),
        start("hanging", hanging, 5, 1),
        start("stubborn", stubborn, 2, 1, timeout=20),  # killed 10 s after its 20 s
    ]
    stdout += "".join(finish(process) for process in later)
    frames = [pd.read_csv(out / "scores.csv") for out in outs.values()]
    return pd.concat(frames, ignore_index=True), outs, stdout


def feedback(outs: dict[str, Path]) -> dict[str, str]:
    """Each student's feedback file, by student."""
    return {
        path.stem: path.read_text(encoding="utf-8")
        for out in outs.values()
        for path in (out / "feedback").glob("*.md")
    }


def totals(scores: pd.DataFrame) -> dict[tuple[str, str], float]:
    return scores.groupby(["student", "exercise"])["points"].sum().to_dict()


def test_every_solution_passes_all_its_tests_hidden_ones_too(graded):
    scores, outs, _ = graded
    mine = scores[(scores.student == "right") & (scores.status != "needs manual grading")]
    assert set(mine.exercise) == set(NAMES)
    assert (mine.status == "ok").all(), mine[mine.status != "ok"][["exercise", "cell", "note"]]
    assert (mine.points == mine["max"]).all()
    for name in NAMES:  # and every other cell of the solution ran without an error too
        notebook = load(outs["builtin"] / "graded" / "right" / f"{name}.ipynb")
        errors = [
            grading.cell_key(c)
            for c in notebook["cells"]
            if grading._error_text(c.get("outputs", []))
        ]
        assert errors == [], (name, errors)


def test_the_builtin_runner_and_nbgrader_agree(graded):
    """The same notebook, graded by nbgrader's autograde and by the built-in runner."""
    scores, _, _ = graded
    cells = scores.set_index(["student", "exercise", "cell"])
    ours, theirs = cells.loc["right-again"], cells.loc["right"].loc[[POP3]]
    assert ours.equals(theirs)


def test_every_blank_exercise_fails_every_graded_test(graded):
    scores, _, _ = graded
    mine = scores[(scores.student == "blank") & (scores.status != "needs manual grading")]
    assert set(mine.exercise) == set(NAMES)
    assert (mine.status == "error").all() and (mine.points == 0).all()


def test_each_kind_of_submission_gets_its_expected_score(graded):
    scores, outs, stdout = graded
    got = totals(scores)
    expected = {"right": 8, "blank": 0, "wrong": 3, "partial": 3, "hanging": 4, "mischief": 2}
    expected |= {"tampered": 0, "right-again": 8, "garbage": 0, "stubborn": 0}
    assert {s: got[(s, POP3)] for s in expected} == expected
    table = pd.read_csv(outs["builtin"] / "totals.csv", index_col="student")
    assert table.loc["right", POP3] == 8 and table.loc["right", "total"] == sum(
        got[("right", n)] for n in NAMES
    )
    assert "right" in stdout and "total" in stdout
    assert got[("wrong", SMTP)] == 2  # read_reply and dot_stuff are right


def test_a_learner_reads_what_went_wrong_in_words(graded):
    """RCPT before MAIL: the verdict names the 503 and the order of the commands."""
    scores, _, _ = graded
    note = scores.set_index(["student", "exercise", "cell"]).loc[
        ("wrong", SMTP, "test-smtp-send"), "note"
    ]
    assert "503" in note and "the order is EHLO, AUTH, MAIL FROM, RCPT TO, DATA" in note


def test_manual_questions_wait_for_a_person(graded):
    scores, _, _ = graded
    manual = scores[scores.status == "needs manual grading"]
    readable = scores[scores.student != "garbage"]
    assert len(manual) == len(readable.groupby(["student", "exercise"]))
    assert manual.points.isna().all() and (manual["max"] > 0).all()


def test_trouble_is_graded_as_far_as_it_goes_with_a_note(graded):
    """A hanging cell times out and the rest still runs; a crash stops the notebook;
    tampered tests are restored; megabytes of output are cut; reading another student's
    notebook is refused. Each is said in the student's feedback."""
    scores, outs, _ = graded
    rows = scores[scores.exercise == POP3].set_index(["student", "cell"])
    assert rows.loc[("hanging", "test-list-uidls"), "status"] == "timeout"
    assert rows.loc[("hanging", "test-fetch-first"), "status"] == "ok"
    assert rows.loc[("mischief", "test-list-uidls"), "status"] == "ok"
    assert rows.loc[("mischief", "test-fetch-first"), "status"] == "not run"
    notes = feedback(outs)
    students = {"right", "blank", "wrong", "partial", "hanging", "mischief", "tampered"}
    assert set(notes) == students | {"right-again", "garbage", "stubborn"}
    assert "the kernel died" in notes["mischief"]
    assert "nbgrader's autograde gave up (its kernel died)" in notes["mischief"]
    assert "did not finish in time (limits: 5 s a cell, 120 s the notebook)" in notes["hanging"]
    assert "was edited: restored from the source" in notes["tampered"]
    assert "was deleted: restored from the source" in notes["tampered"]
    assert "outside its own folder (refused)" in notes["mischief"]
    assert "list_uidls() is not written yet" in notes["blank"]
    graded_notebook = outs["nbgrader"] / "graded" / "mischief" / f"{POP3}.ipynb"
    assert graded_notebook.stat().st_size < 200_000  # 6 MB of "spam" were cut
    assert "output cut by mailkit-edu grade" in graded_notebook.read_text(encoding="utf-8")


def test_what_cannot_be_graded_is_said_and_the_output_folder_is_no_student(graded):
    """A file that is not a notebook scores 0 with a note; a notebook that is no exercise
    and a second copy of one are listed, not graded; grades written inside the
    submissions folder are not taken for a student."""
    scores, outs, _ = graded
    garbage = feedback(outs)["garbage"]
    assert "the notebook could not be read" in garbage
    assert "Not graded: homework.ipynb is not an exercise of this course" in garbage
    assert f"Not graded: copy/{POP3}.ipynb is a second copy: {POP3}.ipynb was graded" in garbage
    assert "grades" not in set(scores.student)


def test_a_kernel_that_ignores_interrupts_is_killed_and_the_batch_goes_on(graded):
    """An endless loop that ignores SIGINT: its cells time out, then the worker and its
    kernel are killed 10 s after the notebook's time; what ran before is kept."""
    scores, outs, _ = graded
    rows = scores[scores.student == "stubborn"].set_index("cell")
    assert rows.loc["test-list-uidls", "status"] == "timeout"
    assert set(rows.status) <= {"timeout", "not run", "needs manual grading"}
    assert (
        "stopped after 30 s (the notebook did not give up the kernel)" in feedback(outs)["stubborn"]
    )
