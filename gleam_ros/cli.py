"""The ``gleam`` command line: one command, subcommands per task."""

from __future__ import annotations

import argparse
import sys

from . import __version__


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``gleam`` with all subcommands."""
    parser = argparse.ArgumentParser(prog="gleam", description="GLEAM cross-view geo-localization tools.")
    parser.add_argument("--version", action="version", version=f"gleam_ros {__version__}")
    parser.add_subparsers(dest="command", metavar="COMMAND")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``gleam``; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
