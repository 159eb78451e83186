"""RWKU (Real-World Knowledge Unlearning) data: targets, probes, corpora, torch datasets.

This module reads the data (target selection, directory and hub sources); the record types are
in ``rwku_records``, the probe prompts in ``rwku_prompts``, the torch datasets in
``rwku_datasets`` (all re-exported here).

RWKU: Jin et al., "RWKU: Benchmarking Real-World Knowledge Unlearning for Large Language
Models", NeurIPS 2024 D&B, arXiv:2406.10890; data ``jinzhuoran/RWKU`` on the Hugging Face
hub, licensed CC BY 4.0 (the passages/MIA texts are Wikipedia-derived, CC BY-SA; the utility
sets are subsets of MMLU, BBH, TruthfulQA, TriviaQA and AlpacaEval). See ``docs/rwku.md``.

Two sources, chosen by ``open_rwku(source)``:

* a **directory** in the layout RWKU's ``process/data_process.py`` writes (and the Google-Drive
  ``RWKU.zip`` ships): ``<root>/Target/<n>_<Name>/<kind>.json``, ``n`` the 1-based position of
  the target in the ``forget_target`` order, spaces in the name replaced by ``_``. ``root`` may
  be the folder that contains ``Target/`` or ``Target/`` itself. ``<root>/all_intro.json``
  (``{name: [intro, ...]}``) is optional.
* ``"hub:<repo_id>"`` (e.g. ``"hub:jinzhuoran/RWKU"``): the per-config HF dataset, loaded lazily
  with ``datasets.load_dataset(repo_id, config)`` and split per target on the ``subject`` field,
  exactly as ``data_process.py`` does. Needs network access (or a warm HF cache); it is not
  exercised by the offline tests beyond an injected loader.

Nothing here hard-codes a data location: the root always comes from the caller (config/CLI).

Directory names may contain non-ASCII characters (``24_Beyoncé``, ``153_Sofía_Vergara``), and
a copy made on macOS or from some archives stores them decomposed (NFD) rather than composed
(NFC). Targets are matched on NFC-normalised, case-folded names, while files are opened through
the directory name exactly as the file system lists it, so both forms work.
"""

from __future__ import annotations

import json
import numbers
import os
import re
import unicodedata
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

# the record types, prompts and torch datasets live in their own modules; re-exported here so
# that ``atwu_plugin.data.rwku`` stays the one import for RWKU data
from atwu_plugin.data.rwku_datasets import RWKUProbeDataset, RWKUTextDataset
from atwu_plugin.data.rwku_prompts import probe_prompt
from atwu_plugin.data.rwku_records import (
    FORGET_LEVELS,
    KINDS,
    NEIGHBOR_LEVELS,
    UTILITY_KINDS,
    BBHItem,
    MIAText,
    MMLUItem,
    Probe,
    RWKUDataError,
    RWKUTarget,
    TriviaQAItem,
    TruthfulQAItem,
)

_DIR_RE = re.compile(r"^(\d+)_(.+)$")


# ----------------------------------------------------------------------------------------------
# Target selection helpers (pure)
# ----------------------------------------------------------------------------------------------


def normalize_name(s: str) -> str:
    """NFC + case-fold + ``_`` as space + collapsed whitespace: the key for name matching."""
    s = unicodedata.normalize("NFC", s).replace("_", " ")
    return " ".join(s.casefold().split())


def format_ranges(ids: Iterable[int]) -> str:
    """``[1, 2, 3, 7]`` -> ``"1-3, 7"``."""
    ids = sorted(set(ids))
    if not ids:
        return "(none)"
    out, start, prev = [], ids[0], ids[0]
    for i in ids[1:] + [None]:
        if i is not None and i == prev + 1:
            prev = i
            continue
        out.append(f"{start}-{prev}" if prev > start else f"{start}")
        if i is not None:
            start = prev = i
    return ", ".join(out)


_RANGE_RE = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*$")
TargetSpec = Union[int, str, RWKUTarget, Sequence[Union[int, str, RWKUTarget]]]


def _split_spec(spec: TargetSpec) -> List[Union[int, str, RWKUTarget]]:
    """Flatten a selection spec into atoms (ints, id-range strings, names, targets).

    A string is split on commas only when every comma-separated part is an id or an id range
    ("1-10, 15"): names such as "Prince Harry, Duke of Sussex" contain commas themselves."""
    if isinstance(spec, bool):
        raise TypeError(f"invalid RWKU target spec {spec!r}")
    if isinstance(spec, numbers.Integral):
        return [int(spec)]
    if isinstance(spec, RWKUTarget):
        return [spec]
    if isinstance(spec, str):
        parts = [p.strip() for p in spec.split(",")]
        if len(parts) > 1 and all(p.isdigit() or _RANGE_RE.match(p) for p in parts):
            return list(parts)
        return [spec.strip()]
    out: List[Union[int, str, RWKUTarget]] = []
    for s in spec:
        out.extend(_split_spec(s))
    return out


# ----------------------------------------------------------------------------------------------
# Sources
# ----------------------------------------------------------------------------------------------


class RWKUData:
    """Read access to RWKU by target. Use :func:`open_rwku` to pick the source from a string."""

    source: str

    # --- to be provided by a source ---
    def targets(self) -> List[RWKUTarget]:
        raise NotImplementedError

    def has(self, target: TargetSpec, kind: str) -> bool:
        raise NotImplementedError

    def _records(self, target: RWKUTarget, kind: str) -> List[Dict[str, Any]]:
        raise NotImplementedError

    # --- selection ---
    def available_ids(self) -> str:
        return format_ranges(t.index for t in self.targets())

    def target(self, spec: Union[int, str, RWKUTarget]) -> RWKUTarget:
        """One target by id (``1``, ``"1"``), name (``"Stephen King"``, ``"stephen_king"``,
        NFC or NFD) or directory name (``"1_Stephen_King"``). ValueError if unknown."""
        if isinstance(spec, RWKUTarget):
            return spec
        by_id = {t.index: t for t in self.targets()}
        if isinstance(spec, bool):
            raise TypeError(f"invalid RWKU target spec {spec!r}")
        if isinstance(spec, numbers.Integral) or (isinstance(spec, str) and spec.strip().isdigit()):
            i = int(spec)
            if i not in by_id:
                raise ValueError(
                    f"RWKU target id {i} not found in {self.source}; available ids: {self.available_ids()}"
                )
            return by_id[i]
        if not isinstance(spec, str):
            raise TypeError(f"invalid RWKU target spec {spec!r}")
        key = normalize_name(spec)
        m = _DIR_RE.match(unicodedata.normalize("NFC", spec.strip()))
        for t in self.targets():
            if key == normalize_name(t.name) or key == normalize_name(t.key):
                return t
            if t.dirname and key == normalize_name(t.dirname):
                return t
        if m and int(m.group(1)) in by_id:
            t = by_id[int(m.group(1))]
            raise ValueError(f"RWKU target {spec!r} not found: id {t.index} is {t.key!r}")
        raise ValueError(
            f"RWKU target {spec!r} not found in {self.source}; give an id ({self.available_ids()}), "
            f"an id range like '1-10', or a name such as {self.targets()[0].name!r}"
        )

    def select(self, spec: TargetSpec) -> List[RWKUTarget]:
        """Targets for ``spec``, in the order requested, without duplicates.

        ``spec``: an id, a name, an id range ``"1-10"`` (inclusive), a comma list ``"1-3, 7"``,
        or a list mixing any of those (``[1, 2, "24_Beyoncé", "10-12"]``). Every id in a range
        must exist (ValueError otherwise)."""
        out: List[RWKUTarget] = []
        seen = set()
        for atom in _split_spec(spec):
            if isinstance(atom, str) and _RANGE_RE.match(atom):
                a, b = map(int, _RANGE_RE.match(atom).groups())
                if a > b:
                    raise ValueError(f"invalid RWKU target range {atom!r}: start > end")
                chosen = [self.target(i) for i in range(a, b + 1)]
            else:
                chosen = [self.target(atom)]
            for t in chosen:
                if t.index not in seen:
                    seen.add(t.index)
                    out.append(t)
        return out

    # --- raw records ---
    def load(self, target: Union[int, str, RWKUTarget], kind: str) -> List[Dict[str, Any]]:
        """The records of one file kind (see :data:`KINDS`) for one target."""
        if kind not in KINDS:
            raise ValueError(f"unknown RWKU file kind {kind!r}; expected one of: {', '.join(KINDS)}")
        t = self.target(target)
        return self._records(t, kind)

    def _load_many(self, targets: TargetSpec, kind: str) -> List[Tuple[RWKUTarget, Dict[str, Any]]]:
        return [(t, r) for t in self.select(targets) for r in self.load(t, kind)]

    # --- typed views (each accepts one target or a selection spec) ---
    def intro(self, target: Union[int, str, RWKUTarget]) -> str:
        recs = self.load(target, "intro")
        return recs[0]["intro"] if recs else ""

    def passages(self, targets: TargetSpec) -> List[str]:
        """Forget corpus (RWKU's ``train_original_passage``: Wikipedia passages about the target,
        used by the GA-passage baseline)."""
        return [r["text"] for _, r in self._load_many(targets, "passage")]

    def texts(self, targets: TargetSpec, kind: str = "passage") -> List[str]:
        """Plain texts of a corpus kind: ``passage`` (default), ``positive``, ``negative``,
        ``forget_mia``, ``retain_mia``; or the intros (``intro``)."""
        key = "intro" if kind == "intro" else "text"
        return [r[key] for _, r in self._load_many(targets, kind)]

    def probes(self, targets: TargetSpec, split: str, level: int) -> List[Probe]:
        levels = {"forget": FORGET_LEVELS, "neighbor": NEIGHBOR_LEVELS}
        if split not in levels:
            raise ValueError(f"split must be 'forget' or 'neighbor', got {split!r}")
        if level not in levels[split]:
            raise ValueError(f"RWKU has no {split} level {level}")
        out = []
        for t, r in self._load_many(targets, f"{split}_level{level}"):
            out.append(
                Probe(
                    query=r["query"],
                    answer=r["answer"],
                    level=int(r.get("level", level)),
                    type=r.get("type", ""),
                    target=r.get("subject", t.name),
                    split=split,
                    neighbor=r.get("neighbor"),
                    target_index=t.index,
                )
            )
        return out

    def forget_probes(self, targets: TargetSpec, level: int) -> List[Probe]:
        return self.probes(targets, "forget", level)

    def neighbor_probes(self, targets: TargetSpec, level: int) -> List[Probe]:
        return self.probes(targets, "neighbor", level)

    def mia(self, targets: TargetSpec, which: str) -> List[MIAText]:
        """``which="forget"`` -> members (``forget_mia``), ``"retain"`` -> ``retain_mia``."""
        if which not in ("forget", "retain"):
            raise ValueError(f"which must be 'forget' or 'retain', got {which!r}")
        return [
            MIAText(
                text=r["text"],
                target=r.get("subject", t.name),
                member=which == "forget",
                ngram=r.get("ngram"),
            )
            for t, r in self._load_many(targets, f"{which}_mia")
        ]

    def fluency(self, targets: TargetSpec) -> List[str]:
        return [r["instruction"] for _, r in self._load_many(targets, "fluency")]

    def mmlu(self, targets: TargetSpec) -> List[MMLUItem]:
        return [
            MMLUItem(
                question=r["question"],
                choices=tuple(r["choices"]),
                answer=int(r["answer"]),
                task=r.get("task", ""),
                examples=tuple(r.get("examples", ())),
            )
            for _, r in self._load_many(targets, "retain_mmlu")
        ]

    def bbh(self, targets: TargetSpec) -> List[BBHItem]:
        return [
            BBHItem(question=r["question"], answer=r["answer"], task=r.get("task", ""), cot=r.get("cot", ""))
            for _, r in self._load_many(targets, "retain_bbh")
        ]

    def truthfulqa(self, targets: TargetSpec) -> List[TruthfulQAItem]:
        out = []
        for _, r in self._load_many(targets, "truthful"):
            mc1, mc2 = r["mc1_targets"], r.get("mc2_targets", r["mc1_targets"])
            out.append(
                TruthfulQAItem(
                    question=r["question"],
                    mc1_choices=tuple(mc1["choices"]),
                    mc1_labels=tuple(int(x) for x in mc1["labels"]),
                    mc2_choices=tuple(mc2["choices"]),
                    mc2_labels=tuple(int(x) for x in mc2["labels"]),
                )
            )
        return out

    def triviaqa(self, targets: TargetSpec) -> List[TriviaQAItem]:
        return [
            TriviaQAItem(question=r["question"], answers=tuple(r["answers"]))
            for _, r in self._load_many(targets, "triviaqa")
        ]

    def inventory(self, targets: TargetSpec) -> Dict[str, Dict[str, int]]:
        """``{target.key: {kind: number of records}}`` for the kinds present."""
        out = {}
        for t in self.select(targets):
            out[t.key] = {k: len(self.load(t, k)) for k in KINDS if self.has(t, k)}
        return out


def _check_records(data: Any, kind: str, where: str) -> List[Dict[str, Any]]:
    if not isinstance(data, list):
        raise RWKUDataError(f"{where}: expected a JSON array of records, got {type(data).__name__}")
    required = KINDS[kind][3]
    for i, r in enumerate(data):
        if not isinstance(r, dict):
            raise RWKUDataError(f"{where}: record {i} is {type(r).__name__}, expected an object")
        missing = [k for k in required if k not in r]
        if missing:
            raise RWKUDataError(f"{where}: record {i} lacks key(s) {missing} (has {sorted(r)})")
    return data


class RWKUDirectory(RWKUData):
    """RWKU in the per-target directory layout (see the module docstring)."""

    def __init__(self, root: Union[str, os.PathLike]):
        root = Path(root).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"RWKU data root {str(root)!r} does not exist or is not a directory")
        target_dir = root / "Target"
        if target_dir.is_dir():
            self.root, self.target_dir = root, target_dir
        elif any(_DIR_RE.match(p.name) and p.is_dir() for p in root.iterdir()):
            self.root, self.target_dir = root.parent, root
        else:
            raise FileNotFoundError(
                f"no RWKU targets under {str(root)!r}: expected {str(target_dir)!r} containing "
                f"directories like '1_Stephen_King'"
            )
        self.source = str(self.target_dir)
        self._targets: Optional[List[RWKUTarget]] = None
        self._cache: Dict[Tuple[int, str], List[Dict[str, Any]]] = {}

    def targets(self) -> List[RWKUTarget]:
        if self._targets is None:
            by_id: Dict[int, RWKUTarget] = {}
            for entry in os.scandir(self.target_dir):
                m = _DIR_RE.match(entry.name)
                if not (m and entry.is_dir()):
                    continue
                t = RWKUTarget(
                    index=int(m.group(1)),
                    name=unicodedata.normalize("NFC", m.group(2).replace("_", " ")),
                    dirname=entry.name,
                )
                if t.index in by_id:
                    raise RWKUDataError(
                        f"{self.target_dir}: two directories for target id {t.index}: "
                        f"{by_id[t.index].dirname!r} and {t.dirname!r} (an NFC and an NFD copy?)"
                    )
                by_id[t.index] = t
            if not by_id:
                raise FileNotFoundError(f"no target directories (like '1_Stephen_King') in {self.target_dir}")
            self._targets = [by_id[i] for i in sorted(by_id)]
        return self._targets

    def path(self, target: Union[int, str, RWKUTarget], kind: str) -> Path:
        t = self.target(target)
        return self.target_dir / t.dirname / KINDS[kind][0]

    def has(self, target: TargetSpec, kind: str) -> bool:
        return self.path(target, kind).is_file()

    def _records(self, t: RWKUTarget, kind: str) -> List[Dict[str, Any]]:
        key = (t.index, kind)
        if key not in self._cache:
            p = self.target_dir / t.dirname / KINDS[kind][0]
            if not p.is_file():
                present = sorted(x.name for x in p.parent.glob("*.json")) if p.parent.is_dir() else []
                raise FileNotFoundError(
                    f"RWKU file {str(p)!r} not found (target {t.key}, kind {kind!r}); "
                    f"present: {', '.join(present) or 'nothing'}"
                )
            try:
                with open(p, encoding="utf-8") as f:
                    data = json.load(f)
            except json.JSONDecodeError as e:
                raise RWKUDataError(f"malformed JSON in {str(p)!r}: {e}") from e
            except UnicodeDecodeError as e:
                raise RWKUDataError(f"{str(p)!r} is not UTF-8: {e}") from e
            self._cache[key] = _check_records(data, kind, str(p))
        return self._cache[key]

    def all_intro(self) -> Dict[str, List[str]]:
        """``<root>/all_intro.json``: ``{target name: [intro sentences]}`` (NFC keys)."""
        p = self.root / "all_intro.json"
        if not p.is_file():
            raise FileNotFoundError(f"RWKU file {str(p)!r} not found")
        try:
            with open(p, encoding="utf-8") as f:
                data = json.load(f)
        except json.JSONDecodeError as e:
            raise RWKUDataError(f"malformed JSON in {str(p)!r}: {e}") from e
        if not isinstance(data, dict):
            raise RWKUDataError(f"{str(p)!r}: expected a JSON object {{name: [intro, ...]}}")
        return {unicodedata.normalize("NFC", k): v for k, v in data.items()}


HubLoader = Callable[[str, str, str], Sequence[Dict[str, Any]]]


class RWKUHub(RWKUData):
    """RWKU from the Hugging Face hub (``source="hub:<repo_id>"``), loaded lazily per config.

    ``loader(repo_id, config, split)`` returns the rows; the default calls
    ``datasets.load_dataset(repo_id, config)[split]`` (network or HF cache). Target ids follow the
    ``forget_target`` order, as in RWKU's ``process/data_process.py``. Kinds that the hub does not
    host raise the loader's error; a target without rows in a config has no such records
    (``has`` is False, ``load`` returns ``[]``)."""

    def __init__(self, repo_id: str, loader: Optional[HubLoader] = None):
        self.repo_id = repo_id
        self.source = f"hub:{repo_id}"
        self._loader = loader or _datasets_loader
        self._tables: Dict[str, Dict[str, List[Dict[str, Any]]]] = {}
        self._targets: Optional[List[RWKUTarget]] = None

    def _table(self, kind: str) -> Dict[str, List[Dict[str, Any]]]:
        if kind not in self._tables:
            _, config, split, _ = KINDS[kind]
            rows = [dict(r) for r in self._loader(self.repo_id, config, split)]
            _check_records(rows, kind, f"{self.source} config {config!r} split {split!r}")
            by_subject: Dict[str, List[Dict[str, Any]]] = {}
            for r in rows:
                subj = r.get("target") if kind == "intro" else r.get("subject")
                by_subject.setdefault(normalize_name(str(subj)), []).append(r)
            self._tables[kind] = by_subject
        return self._tables[kind]

    def targets(self) -> List[RWKUTarget]:
        if self._targets is None:
            _, config, split, _ = KINDS["intro"]
            rows = list(self._loader(self.repo_id, config, split))
            names: List[str] = []
            for r in rows:
                n = unicodedata.normalize("NFC", r["target"])
                if n not in names:
                    names.append(n)
            self._targets = [RWKUTarget(index=i + 1, name=n, dirname="") for i, n in enumerate(names)]
        return self._targets

    def has(self, target: TargetSpec, kind: str) -> bool:
        return bool(self._table(kind).get(normalize_name(self.target(target).name)))

    def _records(self, t: RWKUTarget, kind: str) -> List[Dict[str, Any]]:
        return self._table(kind).get(normalize_name(t.name), [])


def _datasets_loader(repo_id: str, config: str, split: str) -> Sequence[Dict[str, Any]]:
    import datasets  # lazy: only hub users pay for it

    return datasets.load_dataset(repo_id, config)[split]


def open_rwku(source: Union[str, os.PathLike, RWKUData], hub_loader: Optional[HubLoader] = None) -> RWKUData:
    """``"hub:<repo_id>"`` -> :class:`RWKUHub`; a path -> :class:`RWKUDirectory`; an
    :class:`RWKUData` is returned unchanged."""
    if isinstance(source, RWKUData):
        return source
    s = str(source)
    if s.startswith("hub:"):
        repo = s[len("hub:") :].strip()
        if not repo:
            raise ValueError("empty hub repo id in source 'hub:'; use e.g. 'hub:jinzhuoran/RWKU'")
        return RWKUHub(repo, loader=hub_loader)
    return RWKUDirectory(s)


__all__ = [
    "KINDS",
    "FORGET_LEVELS",
    "NEIGHBOR_LEVELS",
    "UTILITY_KINDS",
    "RWKUDataError",
    "RWKUTarget",
    "Probe",
    "MIAText",
    "MMLUItem",
    "BBHItem",
    "TruthfulQAItem",
    "TriviaQAItem",
    "RWKUData",
    "RWKUDirectory",
    "RWKUHub",
    "open_rwku",
    "normalize_name",
    "format_ranges",
    "probe_prompt",
    "RWKUProbeDataset",
    "RWKUTextDataset",
]
