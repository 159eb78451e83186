"""Export QA splits as a local dataset directory that OpenUnlearning loads offline.

OpenUnlearning's TOFU dataset configs call ``datasets.load_dataset(path, name=..., split=...)``
with ``path: locuslab/TOFU`` and ``name`` a TOFU config name (``forget10``,
``forget10_perturbed``, ``retain_perturbed``, ...). The directory written here holds one
JSON Lines file per config name and a ``README.md`` whose ``configs:`` metadata (the
Hugging Face dataset-card format) maps every name to its file, so that

    datasets.load_dataset("<dir>", name="forget10", split="train")

works with no loading script and no network (``HF_DATASETS_OFFLINE=1``). Only
``hf_args.path`` changes: ``+local_data=default paths.local_data=<dir>`` sets it on every
dataset of OU's stock TOFU configs (``configs/local_data/default.yaml``).

Sources: the embedded benchmark (``atwu_plugin.data.generator``; a directory written by
``write_benchmark`` or generated on the fly) or a directory of TOFU's JSON files.

Config names that OU's TOFU evaluator needs and a source lacks are aliases (several names
map to one file; nothing is copied):
  ``forgetNN_perturbed`` -> ``forgetNN`` when its records carry ``paraphrased_answer`` and
  ``perturbed_answer`` (the embedded benchmark's do); ``retain_perturbed`` -> the first
  ``len(forget10)`` records of the smallest retain split, written as its own file;
  ``world_facts_perturbed`` -> ``world_facts``; ``real_authors_perturbed`` ->
  ``world_facts_perturbed`` (the embedded benchmark has no real authors: its
  real-author scores repeat the world-facts scores).
"""

import json
import os
import re
import shutil
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

from atwu_plugin.utils.jsonfile import decode_text

MARKER = "<!-- written by atwu-export -->"
PERTURBED_FIELDS = ("paraphrased_answer", "perturbed_answer")
RETAIN_PERTURBED_DEFAULT_SIZE = 400  # TOFU's retain_perturbed size


def _read(path: Path) -> "tuple[Union[list, dict], Optional[List[int]]]":
    """``(content, lines)``: a JSON document, or JSON Lines with the line of each record."""
    text = decode_text(path.read_bytes(), str(path), "a JSON list or JSON Lines file")
    try:
        return json.loads(text), None  # a JSON list (or object); one-line JSON Lines fall through below
    except json.JSONDecodeError as e:
        if text.lstrip().startswith("["):
            raise ValueError(f"{path}: malformed JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
    records, lines = [], []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: malformed JSON at line {lineno}, column {e.colno}: {e.msg}") from None
            lines.append(lineno)
    return records, lines


def read_records(path: Union[str, Path]) -> Union[list, dict]:
    """A JSON document or JSON Lines file -> its content: a list of records (or of strings
    for ``world_text``) for split files; a JSON object (e.g. ``meta.json``) is returned as is."""
    return _read(Path(path))[0]


def _has_perturbed(records: list) -> bool:
    return bool(records) and all(isinstance(r, dict) and all(f in r for f in PERTURBED_FIELDS) for r in records)


def tofu_aliases(splits: Dict[str, list]) -> Dict[str, str]:
    """Alias name -> existing name, for the TOFU config names ``splits`` lacks."""
    names = set(splits)
    aliases: Dict[str, str] = {}
    for name in sorted(names):
        if re.fullmatch(r"forget\d\d", name) and f"{name}_perturbed" not in names and _has_perturbed(splits[name]):
            aliases[f"{name}_perturbed"] = name
    if "world_facts_perturbed" not in names and "world_facts" in names and _has_perturbed(splits["world_facts"]):
        aliases["world_facts_perturbed"] = "world_facts"
    has_wf = "world_facts_perturbed" in names or "world_facts_perturbed" in aliases
    if "real_authors_perturbed" not in names and has_wf:
        aliases["real_authors_perturbed"] = aliases.get("world_facts_perturbed", "world_facts_perturbed")
    return aliases


def _retain_perturbed(splits: Dict[str, list]) -> Optional[list]:
    """TOFU's ``retain_perturbed``: retain QA with paraphrased/perturbed answers, forget10-sized."""
    if "retain_perturbed" in splits:
        return None
    retains = sorted((n for n in splits if re.fullmatch(r"retain\d\d", n)), key=lambda n: int(n[6:]))
    if not retains or not _has_perturbed(splits[retains[0]]):
        return None
    size = len(splits["forget10"]) if "forget10" in splits else RETAIN_PERTURBED_DEFAULT_SIZE
    return splits[retains[0]][:size]


def _as_records(name: str, items: list) -> List[dict]:
    if items and all(isinstance(x, str) for x in items):
        return [{"text": x} for x in items]  # world_text: pretraining-style text
    if not all(isinstance(x, dict) for x in items):
        raise ValueError(f"split {name!r}: expected a list of records (objects) or of strings")
    return items


def _card(files: Dict[str, str], aliases: Dict[str, str], meta: Optional[dict]) -> str:
    lines = ["---", "configs:"]
    for name in sorted({*files, *aliases}):
        target = files[name] if name in files else files[_resolve(name, aliases, files)]
        lines += [f"- config_name: {name}", "  data_files:", "  - split: train", f"    path: {target}"]
    lines += ["---", MARKER, "", "# Local QA dataset (TOFU layout)", ""]
    lines += [
        "Load one config with `datasets.load_dataset(\"<this dir>\", name=\"forget10\", split=\"train\")`.",
        "In OpenUnlearning: `+local_data=default paths.local_data=<this dir>` (needs atwu-plugin installed).",
        "",
    ]
    if aliases:
        lines.append("Aliases (same file): " + ", ".join(f"`{a}` -> `{t}`" for a, t in sorted(aliases.items())) + ".")
        lines.append("")
    if meta:
        lines += ["Provenance:", "", "```json", json.dumps(meta, indent=1, sort_keys=True), "```", ""]
    return "\n".join(lines)


def _resolve(name: str, aliases: Dict[str, str], files: Dict[str, str]) -> str:
    seen = set()
    while name not in files:
        if name in seen or name not in aliases:
            raise ValueError(f"alias {name!r} does not resolve to a split")
        seen.add(name)
        name = aliases[name]
    return name


def _own_files(out: Path) -> Optional[List[str]]:
    """The files a previous atwu-export wrote into ``out`` (from its README's ``configs:``
    metadata, plus README.md), or None when ``out`` has no atwu-export README."""
    readme = out / "README.md"
    if not readme.is_file():
        return None
    text = readme.read_text(encoding="utf-8", errors="replace")
    if MARKER not in text:
        return None
    return sorted({"README.md", *re.findall(r"^    path: (\S+)$", text, flags=re.M)})


def export_splits(splits: Dict[str, list], out_dir: Union[str, Path], meta: Optional[dict] = None, overwrite: bool = True) -> Path:
    """Write ``splits`` (name -> records) as a local dataset directory; returns its path.

    Written into a temporary sibling directory first. A new (or empty) ``out_dir`` is that
    directory renamed into place. An ``out_dir`` an earlier atwu-export wrote gets its own
    files replaced one by one (each rename is atomic; README.md last) and only those: files
    the user added there are kept. Any other non-empty ``out_dir`` is refused."""
    out = Path(out_dir).expanduser().resolve()
    if not splits:
        raise ValueError("nothing to export: no splits")
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out}: --out is a file; expected a directory (or a new path)")
    own = _own_files(out) if out.exists() else None
    if out.exists() and any(out.iterdir()):
        if own is None:
            raise FileExistsError(f"{out} exists and was not written by atwu-export; choose another --out")
        if not overwrite:
            raise FileExistsError(f"{out} exists (pass overwrite=True to replace it)")
    splits = dict(splits)
    retain_perturbed = _retain_perturbed(splits)
    if retain_perturbed is not None:
        splits["retain_perturbed"] = retain_perturbed
    aliases = tofu_aliases(splits)
    files: Dict[str, str] = {}
    for name in sorted(splits):
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise ValueError(f"split name {name!r}: use letters, digits, '_', '-' or '.'")
        files[name] = f"{name}.jsonl"
    if own is not None:  # never overwrite a file the user put there under one of our names
        clash = sorted(f for f in files.values() if (out / f).exists() and f not in own)
        if clash:
            raise FileExistsError(f"{out}: {', '.join(clash)} not written by atwu-export would be overwritten; "
                                  "move it or choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        for name, items in sorted(splits.items()):
            records = _as_records(name, items)
            with open(tmp / files[name], "w", encoding="utf-8") as f:
                for r in records:
                    f.write(json.dumps(r, ensure_ascii=False) + "\n")
        (tmp / "README.md").write_text(_card(files, aliases, meta), encoding="utf-8")
        if own is None:  # new or empty: one rename
            if out.exists():
                out.rmdir()
            os.replace(tmp, out)
        else:
            for f in sorted(files.values()):
                os.replace(tmp / f, out / f)
            for f in own:  # our files of the previous export that this one no longer has
                if f != "README.md" and f not in files.values():
                    (out / f).unlink(missing_ok=True)
            os.replace(tmp / "README.md", out / "README.md")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def read_split_dir(src_dir: Union[str, Path], names: Optional[Sequence[str]] = None) -> Dict[str, list]:
    """Every ``*.json``/``*.jsonl`` split file of ``src_dir`` (TOFU files or a
    ``write_benchmark`` directory): a JSON list, JSON Lines, or ``{"data": [...]}`` (the
    layout ``datasets`` reads with ``field="data"``), of QA records (checked like
    ``load_split``: a record without ``question``/``answer`` is an error naming the file and
    line) or of strings (``world_text``). ``meta.json`` is provenance, not a split; any
    other file that is not a split is an error naming it, never skipped silently."""
    from atwu_plugin.data.generator import check_records

    src = Path(src_dir).expanduser()
    if not src.is_dir():
        raise FileNotFoundError(f"source directory not found: {src}")
    splits = {}
    for path in sorted(src.iterdir()):
        if path.suffix not in (".json", ".jsonl") or path.name.startswith(".") or path.name == "meta.json":
            continue
        if names is not None and path.stem not in names:
            continue
        records, lines = _read(path)
        if isinstance(records, dict):
            if isinstance(records.get("data"), list):
                records, lines = records["data"], None
            elif set(records) >= {"question", "answer"}:
                records = [records]  # a one-record JSON Lines file
            else:
                raise ValueError(f"{path}: a JSON object with keys {sorted(records)[:6]}; expected a split: a JSON "
                                 "list of records, JSON Lines, or {\"data\": [...]}")
        if not isinstance(records, list):
            raise ValueError(f"{path}: got a JSON {type(records).__name__}; expected a JSON list of records, JSON "
                             "Lines, or {\"data\": [...]}")
        if not records:
            raise ValueError(f"{path}: empty split (no records)")
        # world_text: strings (a write_benchmark dir) or {"text": ...} records (an export)
        if not all(isinstance(r, str) or (isinstance(r, dict) and "text" in r and "question" not in r)
                   for r in records):
            check_records(path, records, lines)
        splits[path.stem] = records
    if not splits:
        raise ValueError(f"{src}: no JSON/JSON Lines split files found")
    if names is not None:
        missing = sorted(set(names) - set(splits))
        if missing:
            raise FileNotFoundError(f"{src}: missing split files for {', '.join(missing)}")
    return splits


def export_directory(src_dir: Union[str, Path], out_dir: Union[str, Path], names: Optional[Sequence[str]] = None) -> Path:
    src = Path(src_dir).expanduser().resolve()
    meta = {"source": str(src)}
    meta_file = src / "meta.json"
    if meta_file.is_file():
        try:
            meta["meta"] = json.loads(meta_file.read_text(encoding="utf-8"))
        except ValueError:
            pass
    return export_splits(read_split_dir(src, names), out_dir, meta=meta)


def export_embedded(out_dir: Union[str, Path], seed: int = 0, **generator_kwargs) -> Path:
    """Generate the embedded benchmark (``generate_benchmark(seed, **kwargs)``) and export it."""
    from atwu_plugin.data.generator import GENERATOR_VERSION, generate_benchmark

    splits = generate_benchmark(seed=seed, **generator_kwargs)
    meta = {"source": "atwu_plugin.data.generator", "generator_version": GENERATOR_VERSION, "seed": seed, **generator_kwargs}
    return export_splits(splits, out_dir, meta=meta)
