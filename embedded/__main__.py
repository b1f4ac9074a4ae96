"""Command line of the embedded default: `python -m embedded run|demo`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from embedded.platform import REPO


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m embedded", description="demat embedded default")
    sub = parser.add_subparsers(dest="command", required=True)
    default_state = Path(os.environ.get("DEMAT_STATE", REPO / ".demat"))
    for name in ("run", "demo"):
        p = sub.add_parser(name)
        p.add_argument("--state", type=Path, default=default_state)
        p.add_argument("--port", type=int, default=int(os.environ.get("DEMAT_PORT", "8080")))
        p.add_argument("--config", type=Path, default=REPO / "flows" / "config" / "demo.yaml")
    sub.choices["demo"].add_argument("--timeout", type=float, default=600)
    args = parser.parse_args(argv)
    if args.command == "run":
        from embedded.platform import run

        return run(args.state, args.port, args.config)
    from embedded.demo import demo

    return demo(args.state, args.port, args.config, timeout=args.timeout)


if __name__ == "__main__":
    sys.exit(main())
