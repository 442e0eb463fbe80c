"""Command line of the pure core: ``python -m bbvisma <command> ...`` (also the ``bbvisma`` script).

Commands are argparse sub-commands registered in :data:`COMMANDS`; another module adds one by
appending a ``register(subparsers)`` function that creates its sub-parser and sets ``func``
(a callable ``(args) -> int``) as its default. Exit codes: 0 success, 1 a refused input
(e.g. an e-invoice that cannot be read), 2 a usage error.

``einvoice FILE...`` reads each file with :func:`bbvisma.einvoice.read_document` and prints one
JSON object per file (JSON Lines; ``--indent`` for humans): the header, the lines, and the totals
as stated and as recomputed -- so a refused or surprising file can be inspected without Odoo.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bbvisma.errors import UnsupportedDocument

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2


# --------------------------------------------------------------------------------------------
# einvoice
# --------------------------------------------------------------------------------------------
def einvoice_result(path: Path) -> tuple[dict[str, Any], int]:
    """The JSON object for one file and the exit code it stands for."""
    from bbvisma.einvoice import computed_totals, read_document

    try:
        data = path.read_bytes()
    except OSError as exc:
        reason = f"{path}: cannot be read: {exc.strerror or exc}"
        return {"file": str(path), "ok": False, "cause": "unreadable_file", "reason": reason}, (
            EXIT_USAGE
        )
    try:
        doc = read_document(data, path.name)
    except UnsupportedDocument as exc:
        return {"file": str(path), "ok": False, "cause": exc.cause, "reason": str(exc)}, (
            EXIT_REFUSED
        )
    header = doc.to_mapping_dict()
    lines = header.pop("lines")
    stated = header.pop("totals")
    header["buyer_email"] = doc.buyer.email
    header["is_credit_note"] = doc.is_credit_note
    computed = {key: str(value) for key, value in computed_totals(doc).items()}
    result = {
        "file": str(path),
        "ok": True,
        "document": header,
        "lines": lines,
        "totals": {"document": stated, "computed_from_lines": computed},
    }
    return result, EXIT_OK


def _run_einvoice(args: argparse.Namespace) -> int:
    exit_code = EXIT_OK
    for name in args.files:
        result, code = einvoice_result(Path(name))
        exit_code = max(exit_code, code)
        print(json.dumps(result, ensure_ascii=False, indent=args.indent), flush=True)
    return exit_code


def _register_einvoice(subparsers) -> None:
    parser = subparsers.add_parser(
        "einvoice",
        help="read ZUGFeRD/Factur-X PDFs, XRechnung/EN 16931 CII and UBL files, print JSON",
        description="Read each e-invoice file and print one JSON object per file: the document "
        "header, its lines and its totals (stated and recomputed), or the refusal cause. "
        "Exit code 0 when every file was read, 1 when any was refused.",
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="PDF or XML e-invoice file")
    parser.add_argument(
        "--indent", type=int, default=None, help="pretty-print with this indent (default: one line)"
    )
    parser.set_defaults(func=_run_einvoice)


# --------------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------------
#: ``register(subparsers)`` functions, one per sub-command; append to add a command.
COMMANDS: list[Callable[[Any], None]] = [_register_einvoice]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bbvisma", description="BuchhaltungsButler -> Visma.net sync core: tools"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for register in COMMANDS:
        register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command; returns the exit code (argparse's usage errors become 2, not an exit)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2), already printed by argparse
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
