"""Browser tests: a throw-away JupyterLab server and Debian's headless Chromium, driven by
Playwright (Python). The recipe and its pitfalls: shared/docs/browser-testing.md.

What the fixtures give a test
    ``jupyter_lab`` (package scope)
        A JupyterLab on 127.0.0.1 (free port, random token) whose root dir is an empty temp
        dir, with temporary settings, workspaces, config, data and runtime dirs (nothing from
        ``~/.jupyter`` leaks in) and the news toast off. Its ``python3`` kernel is this
        test run's Python (``sys.executable``, the project's venv) with the repository on
        ``PYTHONPATH``, so ``import mailkit_edu`` imports the working tree.
        ``jupyter_lab.notebook([...])`` writes a notebook from code-cell sources into the
        root dir (unique name: one kernel per test) and returns its path;
        ``jupyter_lab.copy_notebook(path)`` copies an existing notebook in the same way.
    ``browser`` (package scope)
        Headless ``/usr/bin/chromium`` (or ``$CHROMIUM_PATH``); never ``playwright install``.
    ``page`` (per test)
        A fresh browser context and page (1280x800, 60 s default timeout). On teardown the
        test's kernels are shut down; if the test failed, a screenshot, the browser console
        and the Jupyter server log are saved to the artifacts dir.
    ``artifacts``
        ``$BROWSER_TEST_ARTIFACTS`` or ``artifacts/`` at the repository root (git-ignored).

The package-scoped server and browser are stopped after the last browser test, so the
rest of the suite does not run beside them (and Playwright's sync loop, which marks an
asyncio loop as running in the main thread, is gone before other tests use asyncio).

If ``playwright`` is not importable or there is no Chromium, every browser test is skipped
with the reason (``bash .ci/run`` installs both). With ``BROWSER_TESTS_REQUIRED=1`` (set by
``.ci/run``) that is a failure instead, so CI cannot go green without these tests.

How to add a test (e.g. for ``mailkit_edu.widgets.Compose`` / ``Inbox``)
    Create ``tests/browser/test_<something>.py``::

        import re

        from .conftest import expect, open_notebook, run_all_cells, wait_until_executed

        START = "import mailkit_edu as mk\\nlab = mk.start_lab()"
        COMPOSE = "from mailkit_edu.widgets import Compose\\nCompose(lab)"

        def test_compose_sends(page, jupyter_lab, artifacts):
            open_notebook(page, jupyter_lab, jupyter_lab.notebook([START, COMPOSE]))
            run_all_cells(page)
            send = page.locator(".mk-send")           # the class the widget put on its root
            expect(send).to_be_visible()              # the live view, not the text fallback
            wait_until_executed(page)                 # all cells done, kernel idle
            page.locator(".mk-to input").fill("carol@south.test")  # fill(), never type()
            send.click()
            expect(page.locator(".mk-status")).to_have_text(re.compile("sent"))
            expect(page.locator(".mk-error:visible")).to_have_count(0)
            page.screenshot(path=str(artifacts / "compose_sent.png"))

    Rules of thumb
    * Import ``expect`` and the helpers from ``.conftest``, never ``playwright`` at the top
      of a test module (without playwright the module must still import so the fixtures
      can skip).
    * Find widgets by the stable CSS classes the widgets set (``mk-send``, ``mk-check``,
      ...; ``widget.add_class``). The class sits on the view's root ``div``; the control
      is inside: ``.mk-to input``, ``.mk-body textarea``, ``.mk-folder select``
      (``select_option``), ``.mk-keep input[type=checkbox]``, ``.mk-protocol button``
      (ToggleButtons; ``has_text="IMAP"``); Button and ToggleButton roots are ``<button>``.
      A class used by more than one widget on the page (``mk-error``) needs a filter, or
      Playwright's strict mode fails: ``page.locator(".mk-error:visible")``, or scope it:
      ``page.locator(".mk-inbox .mk-error")``.
    * Never sleep: ``expect(...)`` retries until its timeout. A callback that runs in the
      kernel (send, check mail) updates the view asynchronously; expect the final text.
    * Exceptions in widget callbacks do not reach the test (ipywidgets swallows them; the
      mailkit widgets show them in their ``.mk-error`` area): assert that area is hidden
      or empty, and expect a result that only success produces.
    * ``wait_until_executed`` fails at once, with the text, when a cell shows a traceback.
    * One notebook (one kernel, one ``start_lab()``) per test. A test takes ~9 s on 2 busy
      cores (Lab's page load and the kernel start dominate), and the server and browser
      start ~5 s once: keep the browser layer to a handful of tests (< ~30 s in all), or put
      several checks in one notebook.
    * Don't commit notebooks with outputs for these tests: build them with
      ``jupyter_lab.notebook([...])`` at test time.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

try:
    from playwright.sync_api import expect, sync_playwright

    PLAYWRIGHT_MISSING = ""
except ImportError as error:  # the fixtures skip (or fail with BROWSER_TESTS_REQUIRED=1)
    expect = sync_playwright = None
    PLAYWRIGHT_MISSING = str(error)

if TYPE_CHECKING:
    from playwright.sync_api import Page

__all__ = [
    "KERNEL_IDLE",
    "JupyterServer",
    "expect",
    "open_notebook",
    "run_all_cells",
    "wait_until_executed",
    "write_notebook",
]

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("BROWSER_TEST_ARTIFACTS") or ROOT / "artifacts")
CHROMIUM = os.environ.get("CHROMIUM_PATH") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",  # with the next two: less traffic of Chromium's own,
    "--disable-component-update",
    "--disable-sync",
    # but it still looked up update.googleapis.com, accounts.google.com and (with a form on
    # the page) content-autofill.googleapis.com: resolve no name but the loopback address.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--disable-features=AutofillServerCommunication",
    # (strace: what is left is a UDP connect() to 2001:4860:4860::8888, Chromium's IPv6 route
    # probe; a UDP connect sends no packet.)
    "--disable-dev-shm-usage",  # /dev/shm is tiny in containers
]
SERVER_START_TIMEOUT = 60  # s
UI_TIMEOUT_MS = 60_000  # headroom for a slow CI; the real waits are a few seconds
KERNEL_IDLE = re.compile(r"\|\s*Idle$")  # status bar: "Python 3 (ipykernel) | Idle"
KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}

# Talk to 127.0.0.1 directly even if http(s)_proxy is set.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def write_notebook(path: Path, sources: Sequence[str]) -> Path:
    """Write a notebook of code cells (no outputs) with the ``python3`` kernelspec."""
    if isinstance(sources, str):
        raise TypeError("sources is a list of cell sources, not one string")
    nb = new_notebook(
        cells=[new_code_cell(source) for source in sources],
        metadata={"kernelspec": KERNELSPEC, "language_info": {"name": "python"}},
    )
    nbformat.validate(nb)
    nbformat.write(nb, path)
    return path


class JupyterServer:
    """A running JupyterLab: its URL, token, root dir and log, and a little REST API."""

    def __init__(self, url: str, token: str, root_dir: Path, log: Path) -> None:
        self.url, self.token, self.root_dir, self.log = url, token, root_dir, log

    def api(self, method: str, path: str):
        request = urllib.request.Request(
            f"{self.url}{path}", method=method, headers={"Authorization": f"token {self.token}"}
        )
        with _opener.open(request, timeout=10) as response:
            body = response.read()
            return json.loads(body) if body else None

    def _unique(self, stem: str) -> str:
        # Sessions are keyed by path: a unique name gives each test a kernel of its own.
        return f"{stem}-{uuid.uuid4().hex[:8]}.ipynb"

    def notebook(self, sources: Sequence[str], stem: str = "test") -> str:
        """Write a notebook from code-cell sources into the root dir; return its path."""
        name = self._unique(stem)
        write_notebook(self.root_dir / name, sources)
        return name

    def copy_notebook(self, source: str | Path) -> str:
        """Copy an existing notebook (e.g. ``ROOT / "notebooks/00-setup.ipynb"``) into the
        root dir under a unique name (the original stays untouched); return its path."""
        source = Path(source)
        name = self._unique(source.stem)
        shutil.copy(source, self.root_dir / name)
        return name

    def notebook_url(self, path: str) -> str:
        # "reset": an empty workspace, so Lab re-opens nothing an earlier test left open.
        return f"{self.url}/lab/tree/{path}?token={self.token}&reset"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="package")
def browser_tools() -> None:
    """Skip the browser layer, with the reason, when playwright or Chromium is missing."""
    missing = []
    if PLAYWRIGHT_MISSING:
        missing.append(f"playwright ({PLAYWRIGHT_MISSING}; pip install -e '.[test]')")
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        missing.append(f"Chromium at {CHROMIUM} (apt-get install chromium, or $CHROMIUM_PATH)")
    if missing:
        reason = "browser tests need " + "; ".join(missing) + " - bash .ci/run installs both"
        if os.environ.get("BROWSER_TESTS_REQUIRED", "") not in ("", "0"):
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)


@pytest.fixture(scope="package")
def jupyter_lab(browser_tools, tmp_path_factory, request):
    base = tmp_path_factory.mktemp("jupyterlab")
    root_dir = base / "root"
    root_dir.mkdir()
    # User settings: no "official Jupyter news?" toast (it can cover widgets).
    settings = base / "settings"
    notification = settings / "@jupyterlab" / "apputils-extension"
    notification.mkdir(parents=True)
    (notification / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )
    # The kernel: this Python (the project's venv), importing the working tree's package.
    # A spec in JUPYTER_DATA_DIR comes first, ahead of any python3 spec on the machine.
    kernel = base / "data" / "kernels" / "python3"
    kernel.mkdir(parents=True)
    pythonpath = os.pathsep.join(p for p in [str(ROOT), os.environ.get("PYTHONPATH")] if p)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": KERNELSPEC["display_name"],
        "language": "python",
        "env": {"PYTHONPATH": pythonpath},
        "metadata": {"debugger": False},
    }
    (kernel / "kernel.json").write_text(json.dumps(spec))

    port, token = _free_port(), secrets.token_hex(16)
    cmd = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        f"--port={port}",
        "--ServerApp.port_retries=0",  # fail loudly rather than quietly use port+1
        f"--ServerApp.token={token}",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.root_dir={root_dir}",
        f"--LabApp.user_settings_dir={settings}",
        f"--LabApp.workspaces_dir={base / 'workspaces'}",
        "--LabApp.news_url=None",
        "--LabApp.extension_manager=readonly",  # never asks PyPI about extensions
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")  # CI containers run as root
    env = dict(
        os.environ,
        JUPYTER_CONFIG_DIR=str(base / "config"),  # ignore ~/.jupyter
        JUPYTER_DATA_DIR=str(base / "data"),
        JUPYTER_PREFER_ENV_PATH="0",  # else the venv's own python3 spec wins over ours
        JUPYTER_RUNTIME_DIR=str(base / "runtime"),
        IPYTHONDIR=str(base / "ipython"),  # no profile or startup files of the user's
    )
    log_path = base / "jupyter.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=root_dir,
            env=env,
        )
    server = JupyterServer(f"http://127.0.0.1:{port}", token, root_dir, log_path)
    try:
        request.getfixturevalue("browser")  # Chromium starts while the server boots (~1 s)
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"jupyter lab exited with {proc.returncode}:\n{log_path.read_text()}"
                )
            try:
                server.api("GET", "/api/status")
                break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"jupyter lab not ready after {SERVER_START_TIMEOUT} s:\n{log_path.read_text()}"
                )
            time.sleep(0.2)
        yield server
    finally:
        proc.terminate()  # our PID only; the server shuts its kernels down itself
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="package")
def browser(browser_tools):
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"_report_{report.when}", report)  # the page fixture looks at it
    return report


@pytest.fixture
def page(request, browser, jupyter_lab):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(UI_TIMEOUT_MS)
    pg = context.new_page()
    console: list[str] = []
    pg.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
    pg.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
    try:
        yield pg
        report = getattr(request.node, "_report_call", None)
        if report is not None and report.failed:
            stem = re.sub(r"[^\w.-]+", "_", request.node.name)
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            try:
                pg.screenshot(path=str(ARTIFACTS / f"{stem}-failure.png"))
            except Exception as error:  # a crashed page must not hide the test's failure
                console.append(f"(no screenshot: {error})")
            (ARTIFACTS / f"{stem}-console.txt").write_text("\n".join(console) + "\n")
            shutil.copy(jupyter_lab.log, ARTIFACTS / f"{stem}-jupyter.log")
    finally:
        context.close()
        for session in jupyter_lab.api("GET", "/api/sessions"):  # free this test's kernels
            jupyter_lab.api("DELETE", f"/api/sessions/{session['id']}")


def open_notebook(page: Page, server: JupyterServer, path: str) -> None:
    """Open ``path`` (relative to the root dir) and wait until its kernel is idle."""
    page.goto(server.notebook_url(path))
    page.locator(".jp-NotebookPanel .jp-Notebook").first.wait_for()
    # The toolbar's execution indicator says "idle" before any kernel exists; the status bar
    # goes "No Kernel | Initializing" -> "... | Unknown" -> "... | Idle".
    expect(page.locator("#jp-main-statusbar").get_by_text(KERNEL_IDLE)).to_be_visible()


def run_all_cells(page: Page) -> None:
    """Menu Run > Run All Cells (exact names: "Restart Kernel and Run All Cells…" exists too)."""
    page.locator("#jp-MainMenu").get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()


# Done when every code cell has an execution count ("[3]:"; "[ ]:" is not run yet, "[*]:"
# queued or running). Error outputs and stderr share one mime type in Lab: a traceback is
# recognised by its text ("Traceback (most recent call last)", or "SyntaxError: ..." at the
# start of a line); Run All stops there, so it is reported at once instead of timing out.
_EXECUTED = r"""() => {
  const stderr = '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]';
  const tracebacks = [...document.querySelectorAll(stderr)].map(e => e.textContent)
    .filter(t => /Traceback \(most recent call last\)|^\s*\w*(Error|Exception)\b/m.test(t));
  if (tracebacks.length) return 'error: ' + tracebacks[0].slice(-3000);
  const prompts = [...document.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')];
  return prompts.length > 0 && prompts.every(p => /\[\d+\]/.test(p.textContent)) && 'done';
}"""


def wait_until_executed(page: Page) -> None:
    """Every code cell has an execution count ("[3]:", not "[ ]:" or "[*]:") and the kernel
    is idle again. A traceback in a cell's output fails at once, with its text."""
    outcome = page.wait_for_function(_EXECUTED).json_value()
    if outcome != "done":
        raise AssertionError(f"a cell raised: {outcome}")
    expect(page.locator("#jp-main-statusbar").get_by_text(KERNEL_IDLE)).to_be_visible()
