"""Cut secrets out of text that is stored, shown or logged, in whatever encoding they hide.

A provider that refuses a key often quotes it back, and not always as typed: JSON may escape
any character (`\\u0073k-…`, `\\/`), an echoed URL percent-encodes it (`sk%2D…`), an HTML
error page may use character references (`&#115;k-…`). Replacing the raw bytes misses all of
those, and replacing them before decoding also mangles unrelated text that happens to contain
the key. So a `Redactor` matches each secret with every character in any of these spellings,
mixed freely, and is applied to decoded text. It is applied to diagnostics only (error
messages, stored raw answers, logs), never to a result a consumer needs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

REDACTED = "[redacted]"


def _hex(value: int, width: int) -> str:
    """`value` as hex digits of this width, letters in either case."""
    return "".join(f"[{d.lower()}{d.upper()}]" if d.isalpha() else d for d in f"{value:0{width}x}")


def _spellings(char: str) -> list[str]:
    code = ord(char)
    spellings = [re.escape(char)]
    if code <= 0xFFFF:
        spellings.append(r"\\[uU]" + _hex(code, 4))  # JSON escape
    if char == "/":
        spellings.append(r"\\/")  # JSON's optional escape of the solidus
    spellings.append("".join("%" + _hex(byte, 2) for byte in char.encode()))  # URL
    spellings.append(f"&#0*{code};")  # HTML, decimal
    spellings.append(f"&#[xX]0*{_hex(code, 1)};")  # HTML, hex
    return spellings


def secret_pattern(secret: str) -> str:
    """A regular expression matching `secret` with each character spelled in any way."""
    return "".join("(?:" + "|".join(_spellings(char)) + ")" for char in secret)


class Redactor:
    """Replaces every known secret, however encoded, with `[redacted]`."""

    def __init__(self, secrets: Iterable[str | None]) -> None:
        # Longest first: a secret that contains another must go whole, not leave a tail.
        known = sorted({s for s in secrets if s}, key=len, reverse=True)
        self._pattern = re.compile("|".join(secret_pattern(s) for s in known)) if known else None

    def __bool__(self) -> bool:
        return self._pattern is not None

    def text(self, value: str) -> str:
        if self._pattern is None:
            return value
        return self._pattern.sub(REDACTED, value)

    def json(self, value: Any) -> Any:
        """A copy of a JSON-like value with every string (keys too) redacted."""
        if self._pattern is None:
            return value
        try:
            return self._json(value)
        except RecursionError:  # nested past reason: nothing of it is worth the risk
            return REDACTED

    def _json(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self._json(k): self._json(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._json(item) for item in value]
        return value
