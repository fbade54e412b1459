"""The mail client widgets of the course: the student is the MUA.

``Compose`` (write and send through the MSA), ``Inbox`` (check with POP3 or IMAP: now,
every N seconds, or pushed with IDLE), ``TranscriptView`` (the live protocol table),
``Journey`` (the hops of one message, drawn) and ``LabPanel`` (the servers, their
ports, start/stop, and the settings a real mail client needs)::

    import mailkit_edu as mk
    from mailkit_edu.widgets import Compose, Inbox, TranscriptView

    lab = mk.start_lab()
    Compose(lab)                         # send as alice
    Inbox(lab, "carol@south.test")       # read as carol

Each widget is a plain Python object whose ``.widget`` is the ipywidgets box (a
notebook shows the object itself). Every callback is guarded: an error shows in the
widget's red error area instead of vanishing (``strict(True)`` re-raises, for tests).

The names are imported on first use, so ``import mailkit_edu.widgets`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

from ._base import STRICT, ErrorArea, WidgetBase, css, guarded, strict

__all__ = [
    "STRICT",
    "Compose",
    "ErrorArea",
    "Inbox",
    "Journey",
    "LabPanel",
    "TranscriptView",
    "WidgetBase",
    "css",
    "guarded",
    "strict",
]

_LAZY = {
    "Compose": "compose",
    "Inbox": "inbox",
    "Journey": "journey",
    "LabPanel": "labpanel",
    "TranscriptView": "transcript",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)
