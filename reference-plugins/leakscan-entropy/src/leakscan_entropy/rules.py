"""Flag random-looking strings (likely keys or tokens) by their Shannon entropy.

A community rule: useful, but third-party code, so the host runs it in the
WebAssembly sandbox.  Pure Python and the standard library only.
"""

from __future__ import annotations

import math
import re
from collections import Counter

# Whole runs of key-like characters, starting with a letter or digit (so URL
# paths, which start with "/", are not taken); "=" only as trailing padding.
TOKEN = re.compile(r"(?<![A-Za-z0-9+/_\-])[A-Za-z0-9][A-Za-z0-9+/_\-]{19,}={0,2}")
HEX = re.compile(r"[0-9a-fA-F]+")
UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# Thresholds in bits per character: random hex sits near 4, random base64 near 6;
# English words and identifiers stay well below.
HEX_THRESHOLD = 3.0
HEX_MIN_LENGTH = 32
BASE64_THRESHOLD = 4.2
BASE64_MIN_LENGTH = 20


def shannon_entropy(text: str) -> float:
    """Bits of entropy per character of ``text`` (0.0 for the empty string)."""
    if not text:
        return 0.0
    n = len(text)
    return -sum(c / n * math.log2(c / n) for c in Counter(text).values())


def is_high_entropy(token: str) -> bool:
    """Whether ``token`` looks like a random secret rather than a word, path or ID."""
    if UUID.fullmatch(token):
        return False  # request and trace IDs: random, but not secret
    body = token.rstrip("=")
    if HEX.fullmatch(body):
        return len(body) >= HEX_MIN_LENGTH and shannon_entropy(body) >= HEX_THRESHOLD
    # Random keys mix letters and digits; long identifiers and paths rarely do.
    has_digit = any(c.isdigit() for c in body)
    has_upper = any(c.isupper() for c in body)
    has_lower = any(c.islower() for c in body)
    if not (has_digit and has_lower and has_upper):
        return False
    return len(body) >= BASE64_MIN_LENGTH and shannon_entropy(body) >= BASE64_THRESHOLD


def find_high_entropy(line: str) -> list[tuple[int, int, float]]:
    """``(start, end, entropy)`` of every high-entropy token in ``line``."""
    return [
        (m.start(), m.end(), round(shannon_entropy(m.group().rstrip("=")), 2))
        for m in TOKEN.finditer(line)
        if is_high_entropy(m.group())
    ]


def describe() -> str:
    """One line saying what this plugin detects."""
    return f"high-entropy strings (hex >= {HEX_THRESHOLD} bits/char, base64 >= {BASE64_THRESHOLD} bits/char)"
