"""The command line: ``mailkit-edu serve`` runs a lab; ``mailkit-edu grade`` grades a class.

Role
    So that real clients (curl, swaks, mutt, Thunderbird) can be pointed at the
    lab's servers, ``serve`` starts a lab, prints its servers and accounts (as
    tables, or as JSON with ``--json``) and runs until Ctrl-C or SIGTERM, then
    stops the lab cleanly.

    ``grade SUBMISSIONS_DIR`` runs every submitted exercise notebook against a fresh
    lab of its own and writes the scores and feedback (:mod:`mailkit_edu.grading`).

This module must not import ipywidgets.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .grading import CELL_TIMEOUT, NOTEBOOK_TIMEOUT
from .lab import LabError, start_lab

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mailkit-edu", description="Real mail servers on your own machine, for learning."
    )
    parser.add_argument("--version", action="version", version=f"mailkit-edu {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run a lab in the foreground until Ctrl-C")
    serve.add_argument("--path", help="keep mail, queue and CA in this folder across restarts")
    serve.add_argument("--json", action="store_true", help="print servers and accounts as JSON")
    serve.add_argument(
        "--require-tls", action="store_true", help="demand STARTTLS before AUTH (like real MSAs)"
    )
    serve.add_argument(
        "--mask-secrets", action="store_true", help="hide passwords in the transcript"
    )
    grade = commands.add_parser(
        "grade",
        help="grade a folder of submitted exercise notebooks (one folder per student)",
        description="Run every <student>/.../<exercise>.ipynb with its test cells restored "
        "from the source, each in a fresh kernel with its own lab; write scores.csv, "
        "totals.csv and feedback/<student>.md.",
    )
    grade.add_argument("submissions", type=Path, help="SUBMISSIONS_DIR: one folder per student")
    grade.add_argument("--out", type=Path, default=Path("grades"), help="where to write (./grades)")
    grade.add_argument("--jobs", type=int, default=2, help="notebooks graded at once (2)")
    grade.add_argument(
        "--timeout", type=float, default=NOTEBOOK_TIMEOUT, help="seconds per notebook (%(default)g)"
    )
    grade.add_argument(
        "--cell-timeout", type=float, default=CELL_TIMEOUT, help="seconds per cell (%(default)g)"
    )
    grade.add_argument("--source", type=Path, help="the source notebooks (default: source/)")
    grade.add_argument(
        "--engine",
        choices=["auto", "nbgrader", "builtin"],
        default="auto",
        help="nbgrader's autograde, or the same rules without it (auto: nbgrader if installed)",
    )
    return parser


def _grade(args: argparse.Namespace) -> int:
    from . import grading

    if not args.submissions.is_dir():
        print(f"mailkit-edu: {args.submissions} is not a folder", file=sys.stderr)
        return 1
    try:
        scores = grading.grade(
            args.submissions,
            args.out,
            source=args.source,
            jobs=args.jobs,
            timeout=args.timeout,
            cell_timeout=args.cell_timeout,
            engine=args.engine,
            progress=lambda line: print(line, flush=True),
        )
    except RuntimeError as error:
        print(f"mailkit-edu: {error}", file=sys.stderr)
        return 1
    totals = grading.totals(scores)
    print()
    print(totals.to_string() if len(totals) else "no submissions found")
    print(f"\nscores: {args.out / 'scores.csv'}; feedback: {args.out / 'feedback'}/")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "grade":
        return _grade(args)
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        lab = start_lab(args.path, require_tls=args.require_tls, mask_secrets=args.mask_secrets)
    except (LabError, ValueError) as error:
        print(f"mailkit-edu: {error}", file=sys.stderr)
        return 1
    try:
        servers = lab.servers.drop(columns=["running"])
        if args.json:
            info = {
                "path": str(lab.path),
                "ca_file": str(lab.ca_file),
                "servers": servers.to_dict("records"),
                "accounts": lab.accounts.to_dict("records"),
            }
            print(json.dumps(info, indent=2), flush=True)
        else:
            print(f"mailkit-edu lab running (mail in {lab.path})\n")
            print(servers.to_string(index=False))
            print()
            print(lab.accounts.to_string(index=False))
            print(f"\nLab CA for STARTTLS: {lab.ca_file}")
            print("Press Ctrl-C to stop.", flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        lab.stop()
    if not args.json:
        print("lab stopped.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
