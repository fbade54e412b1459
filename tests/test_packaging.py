"""The package's shape: dependencies in sync, public API pinned, layers respected."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import yaml

import mailkit_edu

ROOT = Path(__file__).resolve().parent.parent


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ;]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_matches_pyproject():
    """environment.yml (conda/Binder) lists exactly pyproject's dependencies, with
    the same version floors, and installs the package itself with pip -e ."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_name(r): r.replace(" ", "") for r in project["dependencies"]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert "conda-forge" in env["channels"]
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    listed = {_name(d): d.replace(" ", "") for d in conda if _name(d) not in ("python", "pip")}
    assert listed == wanted
    assert "-e ." in pip
    python = next(d for d in conda if _name(d) == "python")
    assert python.replace(" ", "") == "python" + project["requires-python"].replace(" ", "")


def test_public_api_is_pinned():
    """mailkit_edu's exported names are exactly these (a change here is an API change)."""
    assert sorted(mailkit_edu.__all__) == sorted(
        ["Account", "Domain", "Lab", "LabError", "__version__", "start_lab"]
    )
    for name in mailkit_edu.__all__:
        assert hasattr(mailkit_edu, name)


# What each module may import from the package, and what it must never import
# (design.md section 3: storage and transcript know nothing of protocols; nothing
# below the widgets imports ipywidgets).
LAYERS = {
    "transcript": set(),
    "config": set(),
    "faults": set(),
    "store": set(),
    "tls": set(),
    "dnsserver": {"transcript"},
    "relay": {"dnsserver", "store"},
    "listener": {"faults", "transcript"},
    "smtp": {"listener", "relay", "transcript"},
    "pop3": {"store"},
    "imapparse": set(),
    "imapmessage": {"imapparse"},
    "imapmailboxes": {"imapparse", "store"},
    "pop3server": {"listener", "pop3", "store", "transcript"},
    "imap": {"imapparse", "imapmessage", "imapmailboxes", "store"},
    "imapserver": {"imap", "imapparse", "listener", "store", "transcript"},
    "lab": {
        "config",
        "dnsserver",
        "imapserver",
        "pop3server",
        "relay",
        "smtp",
        "store",
        "tls",
        "transcript",
    },
    "cli": {"lab", "grading", "__version__"},
    # The journey of a message: reads the transcript (a DataFrame) and the store's files;
    # pure, so a notebook or a grader can use it without widgets.
    "journey": {"store", "transcript"},
    # The MUA knows only sockets and the stdlib clients: nothing of the package, not
    # even the lab (it takes a lab by duck typing), so it works with any mail server.
    "mua": set(),
    # Graded exercises: generates them with nbgrader, checks answers, grades a class in
    # worker processes; it knows the course's chapters, nothing of the servers.
    "grading": {"course"},
}
NEVER = {"ipywidgets", "IPython"}
NO_IO = {"asyncio", "socket"}
#: Modules that import nothing of the package and still do I/O: the client side.
CLIENTS = {"mua"}


def _imports(path: Path) -> tuple[set[str], set[str]]:
    tree = ast.parse(path.read_text())
    internal, external = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level and node.module is None:  # from . import imapparse as p
                internal.update(alias.name for alias in node.names)
            elif node.level:
                internal.add(node.module)
            else:
                external.add((node.module or "").split(".")[0])
        elif isinstance(node, ast.Import):
            external.update(alias.name.split(".")[0] for alias in node.names)
    return internal, external


def test_layers():
    """Each module imports only the layers below it; none imports ipywidgets; the
    protocol-free modules import no asyncio or socket."""
    for name, allowed in LAYERS.items():
        internal, external = _imports(ROOT / "mailkit_edu" / f"{name}.py")
        assert internal <= allowed, f"{name} imports {internal - allowed}"
        assert not external & NEVER, f"{name} imports {external & NEVER}"
        if name in ("pop3", "imap") or (not allowed and name not in {"config", *CLIENTS}):
            assert not external & NO_IO, f"{name} imports {external & NO_IO}"


def test_every_module_has_a_docstring_naming_its_role():
    """Each module opens with a docstring (its role, the RFC it follows)."""
    for path in sorted((ROOT / "mailkit_edu").glob("*.py")):
        doc = ast.get_docstring(ast.parse(path.read_text()))
        assert doc and len(doc) > 40, path.name
