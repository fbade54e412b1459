"""What every mailkit widget shares: one guard for callbacks, and a visible error area.

Role
    ipywidgets swallows exceptions raised in callbacks (a button's ``on_click``, an
    ``observe`` handler, a periodic task): the learner clicks and nothing happens. So
    every callback of every mailkit widget goes through :func:`guarded` (or
    :meth:`WidgetBase.guard`). It catches the exception, shows it in plain words in the
    widget's :class:`ErrorArea` (a red box, visible in any front end), logs the
    traceback for whoever reads logs, and lets the widget carry on.

    Tests set :data:`STRICT` (``mailkit_edu.widgets.strict(True)``, or the environment
    variable ``MAILKIT_WIDGETS_STRICT=1``): then the exception is also raised again, so a
    headless test that calls ``button.click()`` fails loudly instead of passing quietly.

Conventions for the widgets built on this (``compose``, ``inbox``, ``transcript``,
``journey``, ``labpanel``)
    * The logic lives in plain Python (methods you can call from a test); the ipywidgets
      are a view over it.
    * Key controls carry stable CSS classes (``mk-send``, ``mk-check``, ...) so browser
      tests can find them: :func:`css`.
    * Widgets run in the kernel's thread. Periodic work is an asyncio task on the
      kernel's loop (cancellable), never a thread that touches widgets.

This module imports ipywidgets; nothing below ``mailkit_edu.widgets`` may import it.
"""

from __future__ import annotations

import functools
import html
import logging
import os
from collections.abc import Callable
from typing import Any, TypeVar

import ipywidgets as widgets

__all__ = ["STRICT", "ErrorArea", "WidgetBase", "css", "guarded", "strict"]

log = logging.getLogger("mailkit_edu.widgets")

#: Re-raise callback exceptions after showing them (for tests). See :func:`strict`.
STRICT = os.environ.get("MAILKIT_WIDGETS_STRICT", "") not in ("", "0", "false", "no")

F = TypeVar("F", bound=Callable[..., Any])
W = TypeVar("W", bound=widgets.DOMWidget)


def strict(on: bool = True) -> None:
    """Make widget callbacks re-raise their exceptions (tests) or not (notebooks)."""
    global STRICT
    STRICT = on


def css(widget: W, *classes: str) -> W:
    """Add stable CSS classes (``mk-send``) to ``widget`` and return it."""
    for name in classes:
        widget.add_class(name)
    return widget


class ErrorArea:
    """A box that shows what went wrong, in plain words; hidden while there is nothing.

    ``area.widget`` is the ipywidgets HTML to put in a layout; ``area.text`` is the
    plain message (tests read it); ``area.show(...)`` and ``area.clear()`` change it.
    """

    def __init__(self) -> None:
        self.text = ""
        self.widget = css(widgets.HTML(value="", layout=widgets.Layout(display="none")), "mk-error")

    def show(self, message: str) -> None:
        self.text = message
        self.widget.value = (
            '<div style="border:1px solid #c62828;background:#ffebee;color:#b71c1c;'
            f'padding:4px 8px;border-radius:4px;white-space:pre-wrap">{html.escape(message)}</div>'
        )
        self.widget.layout.display = None

    def clear(self) -> None:
        self.text = ""
        self.widget.value = ""
        self.widget.layout.display = "none"


def describe(error: BaseException) -> str:
    """An exception in plain words: its message, and its kind only when the message is empty."""
    text = str(error).strip()
    return text or type(error).__name__


def guarded(area: ErrorArea, callback: F, *, what: str = "") -> F:
    """``callback``, but an exception shows in ``area`` instead of vanishing.

    Under :data:`STRICT` the exception is raised again after it is shown.
    """

    @functools.wraps(callback)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            result = callback(*args, **kwargs)
        except Exception as error:
            log.exception("widget callback %s failed", getattr(callback, "__name__", callback))
            prefix = f"{what}: " if what else ""
            area.show(f"{prefix}{describe(error)}")
            if STRICT:
                raise
            return None
        return result

    return wrapper  # type: ignore[return-value]


class WidgetBase:
    """A widget made of ipywidgets, with an error area and guarded callbacks.

    Subclasses build ``self.widget`` (the box to display) and wire every callback with
    :meth:`guard`. ``_repr_mimebundle_`` lets a notebook show the object itself.
    """

    widget: widgets.Widget

    def __init__(self) -> None:
        self.errors = ErrorArea()

    def guard(self, callback: F, what: str = "") -> F:
        """Wrap a callback so its exceptions show in this widget's error area."""
        return guarded(self.errors, callback, what=what)

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)
