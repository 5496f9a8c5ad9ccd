"""Bundle format throughput: seal and open MB/s next to raw ChaCha20-Poly1305, and
the peak RSS of opening a 1 GB bundle (issue 5, item 7).

Sizes are bytes here, not rows: BENCH_BUNDLE_MB (default 32) of JSON Lines for the
throughput rows, BENCH_BUNDLE_GB (default 1) GB of JSON Lines for the peak-RSS bundle. Every
figure is measured in this run; ratios are what to read, the machine is noisy.
"""
import os
import random
import sys
import tempfile
import time
import zlib
from pathlib import Path

NAME = "bundle"
TITLE = "Bundle format: seal/open throughput and memory"
MB = 1024 * 1024
CHUNK = 64 * 1024


def _records(total_bytes, seed=1):
    """Yield records until about `total_bytes` of JSON: hex blobs (compress ~2:1) and a few fields."""
    rng = random.Random(seed)
    blob = rng.randbytes(1024 * 1024).hex()  # 2 MiB of hex to cut records from
    size = i = 0
    while size < total_bytes:
        start = rng.randrange(0, len(blob) - 4096)
        record = {"model": f"demoapp.Model{i % 5}", "pk": i, "name": f"row {i}", "amount": "123.45",
                  "data": blob[start:start + 1500 + (i % 7) * 100]}
        size += len(record["data"]) + 90
        i += 1
        yield record


def _best(fn, repeat=2):
    best = None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - start
        best = seconds if best is None or seconds < best else best
    return best, result


def _keyring(directory):
    from gestore_retention.bundle import KeyRing, generate_keys

    generate_keys(directory)
    return KeyRing.load(directory)


class _Sink:
    size = 0

    def write(self, data):
        self.size += len(data)
        return len(data)


def throughput(total_mb):
    """Return rows of [what, MB/s, ratio to raw] measured in this process."""
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    from gestore_retention.bundle import age, seal
    from gestore_retention.bundle.format import OpenedBundle, parse_signature

    total = total_mb * MB
    work = Path(tempfile.mkdtemp(prefix="bench-bundle-"))
    ring = _keyring(work / "keys")
    plain = os.urandom(total)
    aead = ChaCha20Poly1305(os.urandom(32))
    nonce = bytes(12)
    view = memoryview(plain)

    def raw_encrypt():
        # Into a sink, as the age layer writes to one: keeping every chunk
        # would time the allocator, not the cipher.
        sink = _Sink()
        for i in range(0, total, CHUNK):
            sink.write(aead.encrypt(nonce, view[i:i + CHUNK], None))
        return sink.size

    raw_enc_s, _ = _best(raw_encrypt)
    sealed_chunks = [aead.encrypt(nonce, view[i:i + CHUNK], None) for i in range(0, total, CHUNK)]

    def raw_decrypt():
        for chunk in sealed_chunks:
            aead.decrypt(nonce, chunk, None)

    raw_dec_s, _ = _best(raw_decrypt)
    del sealed_chunks

    def age_encrypt():
        sink = _Sink()
        with age.encrypt(sink, ring.recipients()) as enc:
            for i in range(0, total, MB):
                enc.write(view[i:i + MB])
        return sink.size

    age_enc_s, _ = _best(age_encrypt)
    age_file = work / "plain.age"
    with open(age_file, "wb") as out, age.encrypt(out, ring.recipients()) as enc:
        for i in range(0, total, MB):
            enc.write(view[i:i + MB])

    def age_decrypt():
        with open(age_file, "rb") as handle:
            return sum(len(c) for c in age.decrypt(handle, ring.decryption_identities()).chunks())

    age_dec_s, _ = _best(age_decrypt)
    del plain, view

    records = list(_records(total))
    jsonl = sum(len(__import__("json").dumps(r, separators=(",", ":"))) + 1 for r in records)
    bundle = work / "b.age"

    def do_seal():
        with open(bundle, "wb") as out:
            return seal(out, {"bundle": "bench"}, iter(records), ring)[0]

    seal_s, signature = _best(do_seal)

    def do_open():
        opened = OpenedBundle("b.age", lambda: open(bundle, "rb"), parse_signature("b.age", signature), ring)
        with opened:
            return sum(1 for _ in opened.records())

    open_s, count = _best(do_open)
    assert count == len(records)

    # Where seal and open spend their time: the compression and JSON stages alone.
    text = b"".join(__import__("json").dumps(r, separators=(",", ":")).encode() + b"\n" for r in records[:4000])
    stages = []
    for level in (1, 6):
        seconds, packed = _best(lambda lv=level: zlib.compress(text, lv))
        stages.append((f"zlib level {level} compress (ratio {len(text) / len(packed):.2f})", len(text) / seconds))
    packed = zlib.compress(text, 6)
    seconds, _ = _best(lambda: zlib.decompress(packed))
    stages.append(("zlib inflate", len(text) / seconds))
    lines = text.splitlines()
    seconds, _ = _best(lambda: [__import__("json").loads(line) for line in lines])
    stages.append(("json.loads per line", len(text) / seconds))
    seconds, _ = _best(lambda: [__import__("json").dumps(r, separators=(",", ":")) for r in records[:4000]])
    stages.append(("json.dumps per record", len(text) / seconds))
    h = __import__("hashlib")
    seconds, _ = _best(lambda: h.blake2b(text).digest())
    stages.append(("BLAKE2b-512 (signature prehash)", len(text) / seconds))

    raw_enc, raw_dec = total / raw_enc_s / MB, total / raw_dec_s / MB
    rows = [
        ["raw ChaCha20-Poly1305 encrypt, 64 KiB chunks (cryptography)", f"{raw_enc:.0f}", "1.00"],
        ["raw ChaCha20-Poly1305 decrypt, 64 KiB chunks (cryptography)", f"{raw_dec:.0f}", "1.00"],
        ["age layer encrypt (STREAM, incompressible bytes)", f"{total / age_enc_s / MB:.0f}",
         f"{total / age_enc_s / MB / raw_enc:.2f}"],
        ["age layer decrypt (STREAM, from a file)", f"{total / age_dec_s / MB:.0f}",
         f"{total / age_dec_s / MB / raw_dec:.2f}"],
        [f"seal: records -> JSON -> zlib 6 -> age -> file + signature ({jsonl / MB:.0f} MB JSONL, "
         f"{bundle.stat().st_size / MB:.0f} MB file)", f"{jsonl / seal_s / MB:.0f}", f"{jsonl / seal_s / MB / raw_enc:.2f}"],
        ["open: verify signature, decrypt, inflate, parse, check manifest", f"{jsonl / open_s / MB:.0f}",
         f"{jsonl / open_s / MB / raw_dec:.2f}"],
    ]
    stage_rows = [[name, f"{speed / MB:.0f}"] for name, speed in stages]
    return rows, stage_rows, work


def make_big(path, keys, gigabytes):
    """Child process: seal about `gigabytes` GB of records into `path`."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    django.setup()
    from gestore_retention.bundle import KeyRing, seal

    ring = KeyRing.load(keys)
    # `gigabytes` GB of JSON Lines (the plaintext); the file is smaller after zlib.
    with open(path, "wb") as out:
        signature, _ = seal(out, {"bundle": "big"}, _big_records(gigabytes), ring)
    Path(str(path) + ".minisig").write_bytes(signature)


def _big_records(gigabytes):
    rng = random.Random(2)
    pool = rng.randbytes(12 * 1024).hex()  # fits zlib's 32 KiB window: compresses well and fast
    target = int(gigabytes * 1e9)
    size = i = 0
    while size < target:
        start = rng.randrange(0, len(pool) - 9000)
        data = pool[start:start + 8000]
        size += len(data) + 40
        i += 1
        yield {"model": "demoapp.Blob", "pk": i, "data": data}


def open_big(path, keys):
    """Child process: open and read the bundle to the end; print records and seconds."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    django.setup()
    from benchmarks.common import report_peak
    from gestore_retention.bundle import KeyRing, open_bundle_file

    start = time.perf_counter()
    with open_bundle_file(path, keyring=KeyRing.load(keys)) as bundle:
        count = sum(1 for _ in bundle.records())
    print(f"records={count} seconds={time.perf_counter() - start:.2f}")
    report_peak()


def run(sizes, databases):
    from benchmarks.common import PY, measure, table

    total_mb = int(os.environ.get("BENCH_BUNDLE_MB", "32"))
    gigabytes = float(os.environ.get("BENCH_BUNDLE_GB", "1"))
    env = {"DJANGO_SETTINGS_MODULE": "tests.settings"}
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    rows, stage_rows, work = throughput(total_mb)
    big = work / "big.age"
    made = measure([PY, "-m", "benchmarks.bundle", "make", str(big), str(work / "keys"), str(gigabytes)], env=env)
    opened = measure([PY, "-m", "benchmarks.bundle", "open", str(big), str(work / "keys")], env=env)
    size = big.stat().st_size
    plain = gigabytes * 1e9
    rss = [
        ["seal (child process)", f"{gigabytes:g} GB", f"{made.seconds:.1f}", f"{plain / made.seconds / MB:.0f}",
         f"{made.peak_rss_mb:.0f}"],
        ["open and read to the end (child process)", f"{gigabytes:g} GB", f"{opened.seconds:.1f}",
         f"{plain / opened.seconds / MB:.0f}", f"{opened.peak_rss_mb:.0f}"],
    ]
    for path in work.rglob("*"):
        if path.is_file():
            path.chmod(0o600)
            path.unlink()
    return "\n\n".join([
        f"Throughput, best of 2, {total_mb} MiB per row (MB/s = MiB of input per second; "
        "seal and open count JSON Lines bytes; ratio = this row / raw ChaCha20-Poly1305 measured above):",
        table(rows, ["what", "MB/s", "ratio to raw"]),
        "Where the time goes (single stages on the same records):",
        table(stage_rows, ["stage", "MB/s"]),
        f"Peak RSS with a bundle of {gigabytes:g} GB of JSON Lines ({size / 1e6:.0f} MB file after zlib); "
        "MB/s of JSON Lines; peak RSS of the child process (Django and the test settings loaded):",
        table(rss, ["step", "JSON Lines", "seconds", "MB/s", "peak RSS MB"]),
        f"Python {sys.version.split()[0]}, zlib {zlib.ZLIB_RUNTIME_VERSION}.",
    ])


if __name__ == "__main__":
    if sys.argv[1] == "make":
        make_big(Path(sys.argv[2]), sys.argv[3], float(sys.argv[4]))
    elif sys.argv[1] == "open":
        open_big(Path(sys.argv[2]), sys.argv[3])
