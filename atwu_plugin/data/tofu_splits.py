"""The real TOFU splits behind the ``tofu_tiny`` benchmark, read from a data directory.

TOFU's ``full.json`` holds 200 fictitious authors x 20 QA in author order; ``retainNN`` are its
first records and ``forgetNN`` its last (checked here, not assumed: every record of a split
derived from ``full`` is located in it). ``author_stride`` keeps every k-th author counted
from the last one (so the last author, the one in every forget split, is always kept): the
smoke zoo of the tests uses it to train on a few authors with the same code path.
"""

import hashlib
import os
import re
from pathlib import Path
from typing import Dict, List, Sequence, Union

from atwu_plugin.data.tofu_labels import load_tofu_split, tofu_records_with_spans

QA_PER_AUTHOR = 20
FORGET_SPLITS = {"forget01": "retain99", "forget05": "retain95", "forget10": "retain90"}
HOLDOUT_OF = {"forget01": "holdout01", "forget05": "holdout05", "forget10": "holdout10"}
# Files the benchmark reads; ``check_data_dir`` requires them all up front.
REQUIRED_FILES = ("full", "retain90", "retain95", "retain99", "forget10_perturbed", "forget05_perturbed",
                  "forget01_perturbed", "retain_perturbed", "holdout10", "holdout05", "holdout01",
                  "real_authors_perturbed", "world_facts_perturbed")


_ENV_RE = re.compile(r"\$(\w+)|\$\{(\w+)\}")


def check_data_dir(data_dir, what: str = "tofu_tiny: data_dir") -> Path:
    """The TOFU directory as a Path; a clear error if it is unset, missing or incomplete.

    ``$VAR`` / ``${VAR}`` are expanded (leaderboard specs say ``data_dir: ${TOFU_DATA}`` so
    their cell hashes do not depend on where the data lives); relative paths are relative to
    the working directory."""
    if data_dir in (None, "", "???"):
        raise ValueError(f"{what} is required: the directory holding TOFU's JSON files "
                         "(full.json, retain90.json, forget10_perturbed.json, ...)")
    unset = [a or b for a, b in _ENV_RE.findall(str(data_dir)) if (a or b) not in os.environ]
    if unset:
        raise ValueError(f"{what}={data_dir!r}: environment variable {', '.join(unset)} is not set "
                         "(set it to the directory holding TOFU's JSON files)")
    path = Path(os.path.expandvars(str(data_dir))).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"{what}={data_dir!r}: not a directory (expected TOFU's JSON files)")
    missing = [f"{name}.json" for name in REQUIRED_FILES if not (path / f"{name}.json").is_file()]
    if missing:
        raise FileNotFoundError(f"{what}={data_dir!r}: missing TOFU files {', '.join(missing)}")
    return path


class TofuSplits:
    """Loads TOFU splits from ``data_dir``, keeping the authors selected by ``author_stride``."""

    def __init__(self, data_dir: Union[str, Path], author_stride: int = 1):
        if not isinstance(author_stride, int) or author_stride < 1:
            raise ValueError(f"author_stride={author_stride!r}: expected a positive integer")
        self.dir = check_data_dir(data_dir)
        self.stride = author_stride
        self.full = load_tofu_split(self.dir, "full")
        if len(self.full) % QA_PER_AUTHOR:
            raise ValueError(f"{self.dir / 'full.json'}: {len(self.full)} records, expected a multiple of "
                             f"{QA_PER_AUTHOR} (TOFU has {QA_PER_AUTHOR} QA per author)")
        self._position = {(r["question"], r["answer"]): i for i, r in enumerate(self.full)}
        self.n_authors = len(self.full) // QA_PER_AUTHOR

    def keeps(self, position: int, n_authors: int) -> bool:
        return (n_authors - 1 - position // QA_PER_AUTHOR) % self.stride == 0

    def _of_full(self, name: str, records: List[dict]) -> List[dict]:
        out = []
        for lineno, r in enumerate(records, start=1):
            pos = self._position.get((r["question"], r["answer"]))
            if pos is None:
                raise ValueError(f"{self.dir / (name + '.json')}: record {lineno} is not in full.json "
                                 "(TOFU's retain/forget splits are subsets of full)")
            if self.keeps(pos, self.n_authors):
                out.append(r)
        return out

    def qa(self, name: str) -> List[dict]:
        """``full``, ``retainNN``, ``forgetNN`` (plain QA) or ``retain_perturbed``."""
        if name == "full":
            return [r for i, r in enumerate(self.full) if self.keeps(i, self.n_authors)]
        return self._of_full(name, load_tofu_split(self.dir, name))

    def forget_with_spans(self, forget_split: str) -> List[dict]:
        """``forgetNN_perturbed`` records with model-free word-label ``spans``."""
        return self._of_full(f"{forget_split}_perturbed", tofu_records_with_spans(self.dir, forget_split))

    def holdout(self, name: str) -> List[dict]:
        """``holdoutNN``: authors outside ``full``, 20 QA each in author order."""
        recs = load_tofu_split(self.dir, name)
        n = max(1, len(recs) // QA_PER_AUTHOR)
        return [r for i, r in enumerate(recs) if self.keeps(i, n)]

    def world(self, name: str) -> List[dict]:
        """``real_authors_perturbed`` / ``world_facts_perturbed`` (general knowledge; kept whole)."""
        return load_tofu_split(self.dir, name)

    def fingerprint(self, names: Sequence[str] = REQUIRED_FILES) -> str:
        """Content hash of the files the zoo is built from (a different copy of the same data
        reuses the cache; edited data rebuilds it)."""
        h = hashlib.sha256()
        for name in names:
            h.update(name.encode())
            h.update((self.dir / f"{name}.json").read_bytes())
        return h.hexdigest()[:16]


def evenly_spaced(records: Sequence, n) -> List:
    """At most ``n`` records spread over the whole list (every author represented), in order."""
    records = list(records)
    if n is None or n >= len(records):
        return records
    if n <= 0:
        raise ValueError(f"eval size must be positive, got {n}")
    return [records[(i * len(records)) // n] for i in range(n)]


def world_qa(splits: TofuSplits) -> Dict[str, List[dict]]:
    return {"ra": splits.world("real_authors_perturbed"), "wf": splits.world("world_facts_perturbed")}
