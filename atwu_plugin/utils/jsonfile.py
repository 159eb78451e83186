"""Read text and JSON files with one-line errors that name the file (and line/column)."""

import json
from pathlib import Path
from typing import Any, Type, Union


def decode_text(data: bytes, name: str, expected: str, error: Type[Exception] = ValueError) -> str:
    """``data`` decoded as UTF-8 (a byte order mark tolerated), or ``error`` naming the file,
    the first bad byte and its line, and what the file should be (``expected``)."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise error(f"{name}: not UTF-8 text (invalid byte 0x{data[e.start]:02x} at line {line}); "
                    f"expected {expected}") from None


def read_json(path: Union[str, Path], error: Type[Exception] = ValueError, name: str = "") -> Any:
    name = name or str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise error(f"{name}: cannot read: {e.strerror or e}") from None
    text = decode_text(data, name, "a JSON file", error)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise error(f"{name}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
