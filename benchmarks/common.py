"""What every benchmark shares: child-process measurement, databases, tables.

Each measurement runs in its own process so its peak RSS is its own
(`os.wait4` gives the child's rusage). Figures are reported next to the peer
measured in the same run (dumpdata, loaddata, Django's delete(), raw
ChaCha20-Poly1305), since the machine is noisy: ratios, not absolutes.
"""
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
PY = sys.executable

DATABASES = {
    "sqlite": None,  # a file under the benchmark's work dir
    "postgresql": os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432/gestore_bench"),
}


@dataclass(frozen=True)
class Measurement:
    seconds: float
    peak_rss_mb: float
    stdout: str


def measure(argv, *, env=None, cwd=ROOT):
    """Run argv in a child process; return wall time, its own peak RSS and stdout.

    Raise RuntimeError with the child's stderr when it fails.
    """
    import tempfile

    full_env = dict(os.environ, **(env or {}))
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=cwd, env=full_env, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)  # the child's own rusage
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))} failed ({proc.returncode}):\n{stderr[-4000:]}")
    return Measurement(seconds=seconds, peak_rss_mb=usage.ru_maxrss / 1024, stdout=stdout)


def report_peak():
    """Call at the end of a child process: prints its own peak RSS for measure()."""
    import resource

    print(f"PEAK_RSS_KB={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}", file=sys.stderr)


def table(rows, headers):
    """Return rows (lists) as a Markdown table."""
    rows = [[str(c) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(headers), "| " + " | ".join("-" * w for w in widths) + " |", *map(line, rows)])


def write_section(name, text):
    """Replace the section `name` of docs/benchmarks.md (between markers) with `text`."""
    DOC.parent.mkdir(exist_ok=True)
    doc = DOC.read_text() if DOC.exists() else "# Benchmarks\n\nWritten by `make bench`; do not edit by hand.\n"
    begin, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{begin}\n{text.strip()}\n{end}"
    if begin in doc:
        doc = re.sub(re.escape(begin) + r".*?" + re.escape(end), lambda _: block, doc, flags=re.S)
    else:
        doc = doc.rstrip() + "\n\n" + block + "\n"
    DOC.write_text(doc)


def postgres_available(url):
    try:
        import psycopg

        from urllib.parse import urlsplit

        parts = urlsplit(url)
        psycopg.connect(host=parts.hostname, port=parts.port or 5432, user=parts.username or "postgres",
                        dbname="postgres", connect_timeout=3).close()
        return True
    except Exception:
        return False
