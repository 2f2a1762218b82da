"""``./dev bench``: run the benchmarks and rewrite their section of docs/benchmarks.md."""

from __future__ import annotations

import argparse

from bench import ingest


def main() -> int:
    parser = argparse.ArgumentParser(prog="./dev bench")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke run)")
    args = parser.parse_args()
    ingest.run(quick=args.quick)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
