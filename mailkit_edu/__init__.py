"""mailkit-edu: learn how email really travels, on real servers on your own machine."""

from __future__ import annotations

__version__ = "0.1.0"
