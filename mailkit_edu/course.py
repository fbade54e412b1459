"""The course: its chapters, their navigation links, and checkpoints for learners.

Role
    One list, :data:`CHAPTERS`, says which notebooks make the course and in what order.
    The README's table, the structure test and the navigation links all come from it.

    * ``python -m mailkit_edu.course`` (or ``make nav``) writes the navigation cells
      of every chapter in ``notebooks/``: a line "← previous · index · next →" after
      the first cell and at the end, as markdown cells tagged ``navigation``. Nobody
      edits those by hand; running it again changes nothing.
    * :func:`checkpoint` is the visible self-check of a chapter: a green line when the
      learner's lab shows what it should, a friendly hint when not. With the
      environment variable ``MAILKIT_STRICT_CHECKPOINTS=1`` (the tests set it) a failed
      checkpoint raises, so a chapter whose demonstration broke fails its test.

This module must not import ipywidgets; IPython is imported only to display.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "CHAPTERS",
    "Chapter",
    "checkpoint",
    "index_markdown",
    "navigation_cells",
    "write_navigation",
]

#: Tag of the cells this module writes; the structure test allows it.
NAVIGATION_TAG = "navigation"
#: Tag of chapter 0's table of chapters, which this module writes too.
INDEX_TAG = "index"


@dataclass(frozen=True)
class Chapter:
    """One notebook of the course: ``notebooks/<slug>.ipynb``."""

    number: int
    slug: str
    title: str

    @property
    def file(self) -> str:
        return f"{self.slug}.ipynb"


#: The chapters, in order (teaching.md: one concept per notebook).
CHAPTERS: tuple[Chapter, ...] = (
    Chapter(0, "00-setup", "Setup, index and glossary"),
    Chapter(1, "01-journey", "The journey of a message: MUA, MSA, MX, MTA, MDA"),
    Chapter(2, "02-smtp-by-hand", "Speaking SMTP by hand over a socket"),
    Chapter(3, "03-envelope-and-header", "Envelope vs header: Bcc, Return-Path, a spoofed From"),
    Chapter(4, "04-mime", "Message format and MIME"),
    Chapter(5, "05-submission-tls-auth", "Submission, STARTTLS and AUTH"),
    Chapter(6, "06-dns-mx", "Finding the server: DNS MX"),
    Chapter(7, "07-relay-and-bounces", "Relay, Received:, queues, retries and bounces"),
    Chapter(8, "08-pop3", "POP3: download and delete"),
    Chapter(9, "09-imap", "IMAP: mail stays on the server"),
    Chapter(10, "10-checking-for-mail", "Checking for mail: on demand, every N seconds, IDLE"),
    Chapter(11, "11-spf-dkim-dmarc", "Spam and spoofing: SPF, DKIM, DMARC"),
    Chapter(12, "12-capstone", "Capstone: the whole journey, explained from transcripts"),
)

INDEX = CHAPTERS[0]


def navigation_markdown(chapter: Chapter) -> str:
    """ "← 03 Envelope … · Index · 05 Submission … →" for ``chapter``."""
    position = CHAPTERS.index(chapter)
    parts = []
    if position > 0:
        before = CHAPTERS[position - 1]
        parts.append(f"[← {before.number:02d} {before.title}]({before.file})")
    if chapter is not INDEX:
        parts.append(f"[Index]({INDEX.file}#Index)")
    if position + 1 < len(CHAPTERS):
        after = CHAPTERS[position + 1]
        parts.append(f"[{after.number:02d} {after.title} →]({after.file})")
    return " · ".join(parts)


def index_markdown() -> str:
    """Chapter 0's index: one line per chapter, with its link."""
    lines = ["## Index", ""]
    for chapter in CHAPTERS:
        lines.append(f"{chapter.number:2d}. [{chapter.title}]({chapter.file})")
    return "\n".join(lines)


def navigation_cells(chapter: Chapter) -> list[dict]:
    """The two navigation cells of ``chapter`` (top and bottom), as notebook JSON."""
    text = navigation_markdown(chapter)
    return [
        {
            "cell_type": "markdown",
            "id": f"nav-{where}",
            "metadata": {"tags": [NAVIGATION_TAG]},
            "source": [text],
        }
        for where in ("top", "bottom")
    ]


def write_navigation(folder: str | os.PathLike[str], only: Sequence[str] = ()) -> list[Path]:
    """Rewrite the navigation cells of every chapter found in ``folder`` (or only of the
    chapters whose slug or number is in ``only``); return the changed files."""
    changed = []
    for chapter in CHAPTERS:
        if only and chapter.slug not in only and f"{chapter.number:02d}" not in only:
            continue
        path = Path(folder) / chapter.file
        if not path.exists():
            continue
        text = path.read_text(encoding="utf-8")
        notebook = json.loads(text)
        cells = [
            cell
            for cell in notebook["cells"]
            if NAVIGATION_TAG not in cell.get("metadata", {}).get("tags", [])
        ]
        top, bottom = navigation_cells(chapter)
        notebook["cells"] = [*cells[:1], top, *cells[1:], bottom]
        for cell in notebook["cells"]:
            if INDEX_TAG in cell.get("metadata", {}).get("tags", []):
                cell["source"] = [index_markdown()]
        new = json.dumps(notebook, indent=1, ensure_ascii=False) + "\n"
        if new != text:
            path.write_text(new, encoding="utf-8")
            changed.append(path)
    return changed


def checkpoint(passed: bool, success: str, hint: str) -> None:
    """Show a learner whether a step worked: ``success`` in green, or ``hint`` in orange.

    Returns nothing (so the last line of a cell prints no ``True``). With
    ``MAILKIT_STRICT_CHECKPOINTS=1`` a failed checkpoint raises AssertionError (for the
    tests that run every chapter).
    """
    text = f"✓ {success}" if passed else f"✗ Not yet: {hint}"
    colour = "#2e7d32" if passed else "#ef6c00"
    try:
        from IPython.display import HTML, display

        display(HTML(f'<p style="color:{colour};font-weight:bold">{html.escape(text)}</p>'))
    except ImportError:  # outside IPython
        print(text)
    if not passed and os.environ.get("MAILKIT_STRICT_CHECKPOINTS", "") not in ("", "0"):
        raise AssertionError(f"checkpoint failed: {hint}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mailkit_edu.course",
        description="Write the navigation cells of the course's chapters.",
    )
    parser.add_argument("folder", nargs="?", default="notebooks", help="the notebooks folder")
    parser.add_argument(
        "--only", nargs="*", default=(), help="chapter numbers or slugs (default: every one)"
    )
    args = parser.parse_args(argv)
    for path in write_navigation(args.folder, args.only):
        print(f"navigation updated: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
