"""Run the API simulators on loopback: ``python -m bbvisma.simulators serve``.

    python -m bbvisma.simulators serve [--host 127.0.0.1] [--bb-port 8071] [--visma-port 8072]
                                       [--seed FILE] [--bb-quota N] [--visma-quota N]
                                       [--duration SECONDS]
    python -m bbvisma.simulators dump-seed

``serve`` starts the BuchhaltungsButler simulator and, when ``bbvisma.simulators.vismanet`` is
importable, the Visma.net simulator, each on its own threaded loopback server; prints their
base URLs and the credentials the seed defines; and runs until Ctrl-C (or ``--duration``
seconds, for scripts). ``dump-seed`` prints the merged default seed
(``{"buchhaltungsbutler": ..., "vismanet": ...}``). A ``--seed`` file has the same shape; each
section present replaces that simulator's default section.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import sys
import threading
from pathlib import Path
from typing import Any

from .buchhaltungsbutler import API_PREFIX, BBSimulator, default_seed
from .common import serve

VISMA_SECTION = "vismanet"
VISMA_SEED = Path(__file__).resolve().parent / "seed" / "visma_default.json"
_CREDENTIAL_WORDS = ("client", "secret", "tenant", "api_key", "company", "username", "password")


def _visma_simulator_class() -> type | None:
    try:
        module = importlib.import_module("bbvisma.simulators.vismanet")
    except ImportError:
        return None
    return getattr(module, "VismaSimulator", None)


def merged_default_seed() -> dict[str, Any]:
    seed: dict[str, Any] = {"buchhaltungsbutler": default_seed()}
    if VISMA_SEED.exists():
        seed[VISMA_SECTION] = json.loads(VISMA_SEED.read_text(encoding="utf-8")).get(
            VISMA_SECTION, {}
        )
    return seed


def _load_seed(path: str | None) -> dict[str, Any]:
    seed = merged_default_seed()
    if path:
        user = json.loads(Path(path).read_text(encoding="utf-8"))
        if not isinstance(user, dict):
            raise SystemExit(f"{path}: a seed file is one JSON object")
        unknown = set(user) - {"buchhaltungsbutler", VISMA_SECTION}
        if unknown:
            raise SystemExit(f"{path}: unknown seed section(s) {', '.join(sorted(unknown))}")
        seed.update(user)
    return seed


def _with_quota(cls: type, quota: int | None) -> dict[str, Any]:
    """The constructor keyword of ``cls`` that takes a quota (its name is the simulator's)."""
    if quota is None:
        return {}
    names = [n for n in inspect.signature(cls).parameters if "quota" in n]
    if not names:
        print(f"note: {cls.__name__} takes no quota setting; --visma-quota ignored")
        return {}
    return {names[0]: quota}


def _credentials(section: Any, prefix: str = "") -> list[str]:
    """Credential-looking leaves of a seed section, for the start-up banner."""
    lines: list[str] = []
    if isinstance(section, dict):
        for key, value in section.items():
            if isinstance(value, (dict, list)):
                lines += _credentials(value, f"{prefix}{key}.")
            elif any(w in key.lower() for w in _CREDENTIAL_WORDS) and isinstance(
                value, (str, int, bool)
            ):
                lines.append(f"{prefix}{key} = {value}")
    elif isinstance(section, list):
        for index, item in enumerate(section):
            lines += _credentials(item, f"{prefix}{index}.")
    return lines


def cmd_serve(args: argparse.Namespace) -> int:
    seed = _load_seed(args.seed)
    bb = BBSimulator(quota_per_minute=args.bb_quota or None)
    bb.load_seed(seed["buchhaltungsbutler"])
    apps: list[tuple[int, Any]] = [(args.bb_port, bb)]
    visma_cls = _visma_simulator_class()
    visma = None
    if visma_cls is None:
        print("note: bbvisma.simulators.vismanet is not available yet; serving BB only")
    else:
        visma = visma_cls(**_with_quota(visma_cls, args.visma_quota))
        visma.load_seed(seed.get(VISMA_SECTION, {}))
        apps.append((args.visma_port, visma))
    with serve(apps, host=args.host) as served:
        print(f"BuchhaltungsButler simulator: {served.urls[0]}{API_PREFIX}")
        for line in _credentials(seed["buchhaltungsbutler"]):
            print(f"  {line}")
        if visma is not None:
            print(f"Visma.net simulator:          {served.urls[1]}")
            for line in _credentials(seed.get(VISMA_SECTION, {})):
                print(f"  {line}")
        print("control API: GET <url>/_sim/state, POST <url>/_sim/faults, POST <url>/_sim/reset")
        print("Ctrl-C stops." if args.duration is None else f"Stops after {args.duration} s.")
        sys.stdout.flush()
        stop = threading.Event()
        try:
            stop.wait(args.duration)
        except KeyboardInterrupt:
            print("stopping")
    return 0


def cmd_dump_seed(_args: argparse.Namespace) -> int:
    json.dump(merged_default_seed(), sys.stdout, indent=1, ensure_ascii=False)
    sys.stdout.write("\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bbvisma.simulators", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("serve", help="serve the simulators on loopback")
    run.add_argument("--host", default="127.0.0.1", help="a loopback address")
    run.add_argument("--bb-port", type=int, default=8071, help="0 picks a free port")
    run.add_argument("--visma-port", type=int, default=8072, help="0 picks a free port")
    run.add_argument("--seed", help="seed JSON file ({buchhaltungsbutler: .., vismanet: ..})")
    run.add_argument("--bb-quota", type=int, default=100, help="requests/minute/api_key, 0 = off")
    run.add_argument("--visma-quota", type=int, default=None, help="Visma.net quota")
    run.add_argument("--duration", type=float, default=None, help="stop after SECONDS")
    run.set_defaults(func=cmd_serve)
    dump = commands.add_parser("dump-seed", help="print the merged default seed")
    dump.set_defaults(func=cmd_dump_seed)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ValueError as exc:  # e.g. a non-loopback --host
        parser.error(str(exc))
        return 2


if __name__ == "__main__":
    sys.exit(main())
