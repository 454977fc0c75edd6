"""`.venv/bin/python -m tests.bench`: run the benchmark suite and print its table."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import asdict

from tests.bench.suite import SCENARIOS, run


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench",
        description="Benchmarks against this machine's PostgreSQL and RabbitMQ, the bridge "
        "as subprocesses and the Telegram double. Figures are printed, never asserted.",
    )
    parser.add_argument("--quick", action="store_true", help="smaller runs, about 3 minutes")
    parser.add_argument("--only", nargs="+", choices=SCENARIOS, default=SCENARIOS)
    parser.add_argument("--soak-seconds", type=int, default=600, help="rss soak (default 600)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    reports = asyncio.run(run(args.only, args.quick, args.soak_seconds))
    print("\n== summary")
    for report in reports:
        for f in report.figures:
            mark = "" if f.met is None else ("met" if f.met else "MISSED")
            print(f"{report.scenario:<7} {f.name:<50} {f.value:>22}  {f.target:<10} {mark}")
    if args.json:
        with open(args.json, "w") as out:
            json.dump([asdict(r) for r in reports], out, indent=2)
    crashed = any(f.name == "CRASHED" for r in reports for f in r.figures)
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())
