"""The pluginsdk demo: the leakscan host discovering and running its plugins at every isolation level.

Run it in an environment where pluginsdk (with the ``wasm`` extra), leakscan
and the reference plugins are installed (``nox -s demo`` does that)::

    python reference-plugins/demo/run_demo.py

Steps: discovery (the incompatible ``legacy`` plugin is reported, not
loaded), a scan of the bundled sample log, the same log piped on stdin and
redacted, and a large generated log with a progress bar.
"""

from __future__ import annotations

import random
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SAMPLE = HERE / "sample.log"


def heading(text: str) -> None:
    print(f"\n=== {text} " + "=" * max(0, 74 - len(text)), flush=True)


def leakscan(*args: str, stdin: str | None = None) -> int:
    """Run the leakscan CLI as a user would; findings exit 1, which is expected here."""
    print("$ leakscan " + " ".join(args), flush=True)
    # Run next to the sample, so findings show a short "sample.log:LINE:COLUMN".
    result = subprocess.run([sys.executable, "-m", "leakscan", *args], input=stdin, text=True, cwd=HERE)
    if result.returncode not in (0, 1):
        raise SystemExit(f"leakscan {' '.join(args)} failed with exit status {result.returncode}")
    return result.returncode


def make_big_log(path: Path, lines: int = 50_000) -> None:
    """A large synthetic log: mostly noise, a planted secret or e-mail address every few hundred lines."""
    rng = random.Random(42)  # same file every run
    paths = ["/health", "/api/v1/orders", "/api/v1/users/42", "/login", "/static/app.js"]
    planted = [
        "user=ops@example.com",
        "key=AKIAIOSFODNN7EXAMPLE",
        "card=4111 1111 1111 1111",
        "token=ghp_u8jzPde0IgxLd6GncfBAepfJBd0Kh8oOOL8d",
    ]
    with path.open("w", encoding="utf-8") as f:
        for n in range(lines):
            extra = rng.choice(planted) if rng.random() < 0.004 else f"bytes={rng.randint(100, 99999)}"
            f.write(
                f"2026-11-24T{n // 3600 % 24:02d}:{n // 60 % 60:02d}:{n % 60:02d}Z INFO api "
                f"GET {rng.choice(paths)} {rng.choice([200, 200, 200, 404, 500])} {rng.random() * 50:.1f}ms {extra}\n"
            )


def main() -> int:
    heading("1. Discovery: every plugin found, its isolation level and status")
    leakscan("plugins", "--describe")

    heading("2. Scan the bundled sample log (findings, then per-plugin level and time)")
    leakscan("scan", SAMPLE.name)

    heading("3. The same log on stdin, redacted")
    leakscan("scan", "--redact", "-", stdin=SAMPLE.read_text(encoding="utf-8"))

    heading("4. A large log (50,000 lines): progress bar on stderr, summary only")
    with tempfile.TemporaryDirectory() as tmp:
        big = Path(tmp) / "big.log"
        make_big_log(big)
        leakscan("scan", "--summary", "--progress", "always", str(big))
    return 0


if __name__ == "__main__":
    sys.exit(main())
