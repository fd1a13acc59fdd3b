"""How fast `StreamRedactor.feed` redacts an agent's output, in MB/s (standard library only).

    python bench/redaction_speed.py [MIB]        each stream MIB MiB long (default 16)

Streams, fed in 1 MiB chunks (what a pipe read hands the supervisor under load):
  flood        bench/agent.py's flood: clean ~100-byte lines, no anchor at all
  test-runner  ~100-byte lines, most holding `token`, `key`, `PASSED` or a URL, no secret
  sparse       the flood's lines with a real-looking secret every ~10,000 lines
  runner+sparse  the test-runner lines with a secret every ~10,000 lines

Each figure is the median of 5 runs; the digest of the output and the count of redactions are
printed too, so two versions of redact.py can be checked to give the same bytes.
"""
import hashlib
import os
import random
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))

from agent import flood_parts  # noqa: E402
from overnight_agent.redact import Redactor, StreamRedactor  # noqa: E402

MIB = 1 << 20
RUNS = 5
ENV = {"OPENAI_API_KEY": "sk-proj-abc123def456ghi789jkl012mno345", "PGPASSWORD": "hunter2hunter2"}

# Made-up values with the shapes of real ones (none is a live credential).
SECRETS = [
    "export OPENAI_API_KEY=sk-proj-abc123def456ghi789jkl012mno345",
    "pushing with ghp_R4nd0mT0k3nV4lu3F0rT3st1ngPurp0s3s1234",
    "aws_access_key_id = AKIAZ7Q2X9W4V6T8R1P3",
    "curl -H 'Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dBjftJeZ4CVP'",
    "git clone https://deploy:Pa55w0rd-Xyz@git.example.com/repo.git",
    "db: password=Hunter2-sailboat next",
    "PGPASSWORD is hunter2hunter2 here",
    "SLACK_BOT=xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
]


def flood_stream(nbytes: int) -> bytes:
    return b"".join(header + body for header, body in flood_parts(nbytes))


def runner_lines(rng: random.Random, count: int):
    """What `pytest -v` and a chatty test suite print: anchor words everywhere, no secret."""
    forms = [
        "tests/test_{m}.py::test_{w}_{n} PASSED{pad}[{p:3d}%]",
        "tests/test_{m}.py::test_refresh_token_{n} PASSED{pad}[{p:3d}%]",
        "tests/test_{m}.py::test_key_rotation_{n} PASSED{pad}[{p:3d}%]",
        "DEBUG urllib3.connectionpool: https://example.com/x \"GET /api/{w}/{n} HTTP/1.1\" 200 {n}",
        "INFO  auth: refreshed the access token for user {n} (expires in 3600 s)",
        "WARN  cache: key {w}:{n} not found, loading it from the store",
        "      {w} = build_{w}({n}, retries=3)  # {m}",
        "ok    compiled module {m}.{w} in 0.{n:03d} s, {p} warnings",
        "collected {n} items / 3 skipped / {p} deselected",
        "    assert response.status_code == 200, f\"{w} failed: {{response.text}}\"",
    ]
    words = ["parser", "session", "journal", "config", "report", "guard", "night", "capture"]
    for i in range(count):
        line = rng.choice(forms).format(m=rng.choice(words), w=rng.choice(words), n=i % 1000,
                                        p=i % 100, pad=" " * (20 + i % 30))
        yield line[:110] + "\n"


def runner_stream(nbytes: int, rng: random.Random) -> bytes:
    lines = list(runner_lines(rng, nbytes // 60))
    return "".join(lines).encode()[:nbytes]


def with_secrets(data: bytes, every: int) -> bytes:
    """`data` with one of SECRETS after every `every` lines."""
    lines = data.split(b"\n")
    for n, i in enumerate(range(every // 2, len(lines), every)):
        lines[i] = SECRETS[n % len(SECRETS)].encode() + b" " + lines[i]
    return b"\n".join(lines)


def feed_all(data: bytes):
    stream = StreamRedactor(Redactor(ENV))
    out = bytearray()
    for i in range(0, len(data), MIB):
        out += stream.feed(data[i:i + MIB])
    out += stream.flush()
    return bytes(out), stream.redactor.count


def streams(nbytes: int) -> dict:
    rng = random.Random(1)
    flood = flood_stream(nbytes)
    runner = runner_stream(nbytes, rng)
    return {"flood": flood, "test-runner": runner, "sparse": with_secrets(flood, 10_000),
            "runner+sparse": with_secrets(runner, 10_000)}


def measure(data: bytes) -> dict:
    """MB/s (median of RUNS), how many secrets were redacted, and the output's digest."""
    times, out, count = [], b"", 0
    for _ in range(RUNS):
        t0 = time.perf_counter()
        out, count = feed_all(data)
        times.append(time.perf_counter() - t0)
    return {"mb_per_s": len(data) / statistics.median(times) / 1e6, "mib": len(data) / MIB,
            "redacted": count, "sha256": hashlib.sha256(out).hexdigest()[:16], "unchanged": out == data}


def main(argv) -> None:
    nbytes = int(argv[0]) * MIB if argv else 16 * MIB
    print(f"python {sys.version.split()[0]}, median of {RUNS} runs, 1 MiB chunks")
    for name, data in streams(nbytes).items():
        r = measure(data)
        print(f"{name:14s} {r['mb_per_s']:8.1f} MB/s   {r['mib']:5.1f} MiB   "
              f"redacted {r['redacted']:4d}   out sha256 {r['sha256']}")


if __name__ == "__main__":
    main(sys.argv[1:])
