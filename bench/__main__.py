"""``./dev bench``: run the benchmarks and rewrite their section of docs/benchmarks.md."""

from __future__ import annotations

import argparse
import json

from bench import (
    cold_compare,
    cold_start,
    crypto_evm,
    crypto_solana,
    ingest,
    invoicing,
    localstack_memory,
    rating,
    rooms,
)

CLEAN_UP = """\
clean-up: every server a benchmark starts (moto servers, anvil; the AWS stub and the stand-ins are
threads of the bench) listens on 127.0.0.1 and is stopped by PID when its benchmark ends, also on an
error or Ctrl-C. A bench killed without stopping them (SIGTERM, SIGKILL, a closed terminal) leaves
none running either: the local stack's moto server ends with the process that started it, moto's own
server and anvil have a watchdog that stops them, and the process measuring a local stack stops it
once the bench is gone (docs/decisions.md D184). Scratch files (packages, logs) stay in .bench/
(gitignored) for the next run."""


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="./dev bench",
        description="Run the benchmarks and rewrite their generated sections of docs/benchmarks.md.",
        epilog=CLEAN_UP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke run)")
    parser.add_argument(
        "--only",
        choices=[
            "ingest",
            "cold_start",
            "rating",
            "rooms",
            "localstack-memory",
            "invoicing",
            "crypto-evm",
            "crypto-solana",
        ],
        help="run one benchmark",
    )
    parser.add_argument(
        "--compare",
        metavar="REV",
        help="paired cold starts of REV's code (before) and the working tree's (after); writes nothing",
    )
    parser.add_argument(
        "--functions",
        default=",".join(cold_compare.DEFAULT_FUNCTIONS),
        help="with --compare: the template's functions to compare (comma-separated logical ids)",
    )
    parser.add_argument("--runs", type=int, default=11, help="with --compare: rounds")
    args = parser.parse_args()
    if args.compare:
        cold_compare.run(args.compare, tuple(args.functions.split(",")), args.runs)
        return 0
    if args.only in (None, "ingest"):
        ingest.run(quick=args.quick)
    if args.only in (None, "cold_start"):
        cold_start.run(quick=args.quick)
    if args.only in (None, "rating"):
        print(rating.run(quick=args.quick))
    if args.only in (None, "localstack-memory"):
        print(json.dumps(localstack_memory.run(quick=args.quick), indent=2))
    if args.only in (None, "rooms"):
        rooms.run(quick=args.quick)
    if args.only in (None, "invoicing"):
        print(invoicing.run(quick=args.quick))
    if args.only in (None, "crypto-evm"):
        print(crypto_evm.run(quick=args.quick))
    if args.only in (None, "crypto-solana"):
        print(crypto_solana.run(quick=args.quick))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
