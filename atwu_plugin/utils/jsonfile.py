"""Read a JSON file with one-line errors that name the file (and line/column)."""

import json
from pathlib import Path
from typing import Any, Type, Union


def read_json(path: Union[str, Path], error: Type[Exception] = ValueError, name: str = "") -> Any:
    name = name or str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise error(f"{name}: cannot read: {e.strerror or e}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise error(f"{name}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
