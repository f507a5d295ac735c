"""The ``speqmoe`` command line.

Each sub-command lives in its own module in :mod:`speqmoe.commands` and provides
``add_parser(subparsers)`` (returning the parser, with ``set_defaults(func=run)``)
and ``run(args) -> int``. User mistakes raise :class:`UserError`; they are printed as
one line on stderr and the tool exits with status 2, without a traceback; an operating-system
error (an unwritable ``--out``, a full disk, a missing tool) is one line too, with status 1.
``--json``, where a command has it, means one thing: stdout is one JSON object instead of the
text, and progress still goes to stderr.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from speqmoe.errors import UserError

import speqmoe.commands as _commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="speqmoe",
        description="Generate, simulate, synthesize and evaluate the speqmoe accelerator blocks.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for info in sorted(pkgutil.iter_modules(_commands.__path__), key=lambda i: i.name):
        module = importlib.import_module(f"speqmoe.commands.{info.name}")
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"speqmoe {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        print(f"speqmoe {args.command}: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"speqmoe {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
