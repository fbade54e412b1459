"""A graded exercise in JupyterLab: a test cell of a blank exercise shows its verdict as one
friendly line ("✗ Not yet: …"), not a traceback."""

from __future__ import annotations

from pathlib import Path

from .conftest import KERNEL_IDLE, expect, run_all_cells

ROOT = Path(__file__).resolve().parent.parent.parent
EXERCISE = ROOT / "exercises" / "02-smtp-client" / "02-smtp-client.ipynb"
STDERR = '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'
#: Milliseconds for the kernel to start and the cells to run (Playwright's expect waits 5 s).
SLOW = 60_000


def test_a_blank_exercise_says_not_yet_in_a_sentence(page, jupyter_lab, artifacts):
    page.goto(jupyter_lab.notebook_url(jupyter_lab.copy_notebook(EXERCISE)))
    page.locator(".jp-NotebookPanel .jp-Notebook").first.wait_for()
    idle = page.locator("#jp-main-statusbar").get_by_text(KERNEL_IDLE)
    expect(idle).to_be_visible(timeout=SLOW)
    run_all_cells(page)  # Run All stops at the first test cell that fails

    verdict = page.locator(STDERR).filter(has_text="Not yet")
    expect(verdict).to_have_count(1, timeout=SLOW)
    expect(verdict).to_contain_text("✗ Not yet: read_reply() is not written yet")
    text = verdict.inner_text()
    assert "Traceback" not in text and "NotYet" not in text and "AssertionError" not in text
    verdict.scroll_into_view_if_needed()
    page.screenshot(path=str(artifacts / "exercise_verdict.png"))
