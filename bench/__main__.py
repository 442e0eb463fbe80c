"""``python -m bench run ...`` and ``python -m bench faults`` (see :mod:`bench`)."""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import time
from pathlib import Path

from .runner import DEFAULT_FLOWS

RESULTS = Path(__file__).resolve().parent / "results"
ALL_PASSES = ("time", "memory", "naive", "quota", "parallel", "faults")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="measure the flows (writes bench/results/<date>.md)")
    run.add_argument(
        "--n", type=int, action="append", help="records per flow (repeatable; default 1000)"
    )
    run.add_argument(
        "--flows",
        default=",".join(DEFAULT_FLOWS),
        help="comma-separated flow types, in run order (default: %(default)s)",
    )
    run.add_argument("--odoo", metavar="DB", help="also run through the Odoo module in DB")
    run.add_argument(
        "--passes",
        default=",".join(ALL_PASSES),
        help="comma-separated subset of: " + ", ".join(ALL_PASSES),
    )
    run.add_argument("--quota-n", type=int, default=1000, help="records of the quota pass")
    run.add_argument("--parallel-n", type=int, default=1000, help="records of the parallel pass")
    run.add_argument(
        "--out",
        type=Path,
        help="where to write the report (default: bench/results/<date>.md and latest.md)",
    )
    run.add_argument(
        "--label",
        help="name suffix of the default report files (bench/results/<date>-<label>.md and "
        "latest-<label>.md), e.g. 'odoo' for a run of the Odoo passes alone",
    )
    run.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    report = sub.add_parser(
        "report", help="render (and merge) reports from the JSON files 'run' wrote"
    )
    report.add_argument("json", type=Path, nargs="+", help="JSON reports, merged in this order")
    report.add_argument("--out", type=Path, required=True, help="the Markdown file to write")
    report.add_argument(
        "--reproduce",
        action="append",
        help="the command(s) that produced the JSON files, for the 'Reproduce' line",
    )
    faults = sub.add_parser("faults", help="run the fault suite and print its table")
    faults.add_argument("--flow", action="append", help="only these flows (repeatable)")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if not getattr(args, "quiet", False) else logging.WARNING,
        format="%(asctime)s %(message)s",
        datefmt="%H:%M:%S",
    )
    # the engine's per-run summaries and the flows' warnings are not the bench's output
    logging.getLogger("bbvisma").setLevel(logging.CRITICAL)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    if args.command == "faults":
        return _faults(args)
    if args.command == "report":
        return _report(args)
    return _run(args, argv if argv is not None else sys.argv[1:])


def _faults(args: argparse.Namespace) -> int:
    from .faults import build_cases, run_all, table

    cases = [c for c in build_cases() if not args.flow or c.flow in args.flow]
    outcomes = run_all(cases)
    print(table(outcomes))
    unexpected = [o for o in outcomes if not o.ok and not o.known_defect]
    known = [o for o in outcomes if not o.ok and o.known_defect]
    print(
        f"\n{len(outcomes) - len(unexpected) - len(known)} ok, {len(known)} known defect(s), "
        f"{len(unexpected)} unexpected failure(s)"
    )
    for o in known:
        print(f"known defect, {o.case}: {o.known_defect}")
    return 1 if unexpected else 0


def _report(args: argparse.Namespace) -> int:
    import json

    from .report import from_json, merge, render, to_json

    results = [from_json(json.loads(path.read_text(encoding="utf-8"))) for path in args.json]
    merged = merge(results)
    default = "python -m bench report " + " ".join(map(str, args.json))
    command = " ; ".join(args.reproduce or [default])
    args.out.write_text(render(merged, command), encoding="utf-8")
    args.out.with_suffix(".json").write_text(to_json(merged), encoding="utf-8")
    print(f"report: {args.out}")
    return 0


def _run(args: argparse.Namespace, argv: list[str]) -> int:
    from .report import render, targets, to_json
    from .runner import run_bench

    ns = args.n or [1000]
    flows = [f.strip() for f in args.flows.split(",") if f.strip()]
    passes = {p.strip() for p in args.passes.split(",") if p.strip()}
    unknown = passes - set(ALL_PASSES)
    if unknown:
        print(f"unknown pass(es): {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    result = run_bench(
        ns,
        flows,
        passes=passes,
        odoo_db=args.odoo,
        quota_n=args.quota_n,
        parallel_n=args.parallel_n,
    )
    command = "python -m bench " + " ".join(shlex.quote(a) for a in argv)
    text = render(result, command)
    if args.out:
        paths = [args.out]
    else:
        RESULTS.mkdir(parents=True, exist_ok=True)
        suffix = f"-{args.label}" if args.label else ""
        paths = [
            RESULTS / f"{time.strftime('%Y-%m-%d')}{suffix}.md",
            RESULTS / f"latest{suffix}.md",
        ]
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        path.with_suffix(".json").write_text(to_json(result), encoding="utf-8")
    for ok, line in targets(result):
        print(f"{'PASS' if ok else 'FAIL'} {line}")
    print("report: " + ", ".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
