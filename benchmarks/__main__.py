"""Run the benchmarks: `python -m benchmarks [--only NAME ...] [--sizes 10000,100000]`.

Each module benchmarks/<name>.py (not common.py, not _private.py) defines `NAME`, `TITLE` and
`run(sizes, databases) -> str` (a Markdown table plus notes); the output is
printed and written to docs/benchmarks.md under its own section.
"""
import argparse
import importlib
import pkgutil
import sys
from pathlib import Path

from .common import DATABASES, postgres_available, write_section

DEFAULT_SIZES = (10_000, 100_000, 1_000_000)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--only", nargs="*", help="module names to run (default: all)")
    parser.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)),
                        help="rows per subject, comma-separated (default: %(default)s)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    databases = {"sqlite": None}
    if postgres_available(DATABASES["postgresql"]):
        databases["postgresql"] = DATABASES["postgresql"]
    else:
        print("postgresql does not answer: benchmarking on SQLite only", file=sys.stderr)
    here = Path(__file__).parent
    # common and _private modules are helpers, not benchmarks.
    names = [m.name for m in pkgutil.iter_modules([str(here)]) if m.name != "common" and not m.name.startswith("_")]
    for name in sorted(names):
        if args.only and name not in args.only:
            continue
        module = importlib.import_module(f"benchmarks.{name}")
        print(f"\n## {module.TITLE}\n", flush=True)
        text = module.run(sizes, databases)
        print(text, flush=True)
        if not args.no_write:
            write_section(name, f"## {module.TITLE}\n\n{text}")


if __name__ == "__main__":
    main()
