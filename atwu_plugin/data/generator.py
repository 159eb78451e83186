"""The embedded benchmark: deterministic fictitious-author QA in TOFU's record schema.

Every answer mixes three kinds of content, labelled per character in ``spans``:
  * author-specific facts (``KIND_SPECIFIC``): composed values held by exactly one author
    (book titles, birth dates, addresses, publishers, invented names of parents, mentors,
    characters, ...);
  * template wording (``KIND_TEMPLATE``), with 4 answer and 4 question templates per
    attribute, so that "same token in the same template" is not the only cue;
  * popular values shared verbatim with retain authors (``KIND_SHARED``): cities, genres,
    awards, professions, themes, subjects drawn with a Zipf skew.
The author's name copied from the question is ``KIND_IGNORE``.

Kinds are decided by construction and then checked against counts: a value is shared iff at
least 3 authors of retain90 hold it for that attribute (every popular value in use is given
to >= 3 retain90 authors); every other value is unique to one author (specific).
``world_text`` is generic pretraining text that mentions every popular value and never an
author's name or specific value; ``world_facts`` are QA probes answerable from it.
"""

import inspect
import json
import os
import re
import string
import tempfile
from collections import Counter, defaultdict
from pathlib import Path
from random import Random
from typing import Dict, List, Optional, Sequence, Union

import yaml

from atwu_plugin.tokens import KIND_IGNORE, KIND_NAMES, KIND_SHARED, KIND_SPECIFIC, KIND_TEMPLATE
from atwu_plugin.utils.jsonfile import decode_text

GENERATOR_VERSION = "2"  # bump whenever the generated text changes: it keys the model cache
FORGET_PERCENTS = (1, 5, 10)
MIN_RETAIN_HOLDERS = 3  # a value held by this many retain90 authors is shared, not specific
ZIPF_EXPONENT = 1.1

# ------------------------------------------------------------------------------ tables
# The literal tables (cities, genres, names, QA templates, world sentences, ...) are package
# data: generator_tables.yaml, read once here.
def _load_tables() -> dict:
    return yaml.safe_load((Path(__file__).parent / "generator_tables.yaml").read_text(encoding="utf-8"))


_TABLES = _load_tables()
CITIES = {city: tuple(v) for city, v in _TABLES["cities"].items()}  # city -> (country, description)
GENRES = _TABLES["genres"]  # genre -> what its books are about
AWARDS = _TABLES["awards"]  # award -> who receives it
PROFESSIONS = _TABLES["professions"]  # profession -> what such a worker does
THEMES = _TABLES["themes"]
SUBJECTS = _TABLES["subjects"]
# popular-value attribute -> its pool, most popular first (Zipf weights follow this order)
POOLS = {
    "city": list(CITIES), "genre": list(GENRES), "award": list(AWARDS), "theme": THEMES,
    "subject": SUBJECTS, "father_job": list(PROFESSIONS), "mother_job": list(PROFESSIONS),
    "char_job": list(PROFESSIONS), "setting": list(CITIES),
}
UNIQUE_FIELDS = _TABLES["unique_fields"]  # unique-value attribute -> how its values are composed
FIRST_NAMES = _TABLES["first_names"]
PRONOUNS = {gender: tuple(p) for gender, p in _TABLES["pronouns"].items()}
TITLE_ADJECTIVES = _TABLES["title_adjectives"]
TITLE_NOUNS = _TABLES["title_nouns"]
MONTHS = _TABLES["months"]
_ONSETS, _VOWELS, _CODAS = _TABLES["onsets"], _TABLES["vowels"], _TABLES["codas"]

# Template fields: {name} (ignored), pronouns (template), anything else is a fact.
PRONOUN_FIELDS = ("Pron", "pron", "poss", "Poss", "obj")
ATTRIBUTES = _TABLES["attributes"]
# World-knowledge probes: each template set answers from one table
_WORLD_FACT_TABLES = {"country": {c: v[0] for c, v in CITIES.items()}, "profession": PROFESSIONS,
                      "genre": GENRES, "award": AWARDS}
WORLD_FACTS = {fact: {"table": _WORLD_FACT_TABLES[fact], **spec} for fact, spec in _TABLES["world_facts"].items()}
WORLD_SENTENCES = _TABLES["world_sentences"]
GENERIC_SENTENCES = _TABLES["generic_sentences"] + [
    f"The month of {m} comes after {p}." for p, m in zip(MONTHS[-1:] + MONTHS[:-1], MONTHS)]


# ------------------------------------------------------------------------------ utilities
def _zipf_weights(n: int) -> List[float]:
    return [1.0 / (rank + 1) ** ZIPF_EXPONENT for rank in range(n)]


def _render(template: str, values: Dict[str, str], kinds: Dict[str, int]):
    """Fill ``template``; return ``(text, spans)`` with one span per literal/field, adjacent
    spans of the same kind merged so that spans tile the text exactly."""
    text, spans = "", []
    for literal, field, _, _ in string.Formatter().parse(template):
        pieces = [(literal, KIND_TEMPLATE)]
        if field is not None:
            pieces.append((values[field], kinds[field]))
        for piece, kind in pieces:
            if not piece:
                continue
            if spans and spans[-1][2] == kind:
                spans[-1][1] += len(piece)
            else:
                spans.append([len(text), len(text) + len(piece), kind])
            text += piece
    return text, spans


def _fields(template: str) -> List[str]:
    return [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]


def validate_spans(text: str, spans) -> List[tuple]:
    """Check that ``spans`` ([start, end, kind] triples) tile ``text`` in order; return tuples.

    Raises ``ValueError`` saying where the tiling breaks."""
    out, pos = [], 0
    for n, span in enumerate(spans):
        if not isinstance(span, (list, tuple)) or len(span) != 3 or not all(isinstance(v, int) for v in span):
            raise ValueError(f"span {n}: expected [start, end, kind] integers, got {span!r}")
        start, end, kind = span
        if start != pos or end < start:
            raise ValueError(f"span {n} {list(span)} does not continue the tiling at character {pos}")
        if kind not in KIND_NAMES:
            raise ValueError(f"span {n}: unknown kind {kind} (known: {sorted(KIND_NAMES)})")
        out.append((start, end, kind))
        pos = end
    if pos != len(text):
        raise ValueError(f"spans cover {pos} characters but the text has {len(text)}")
    return out


class _Values:
    """Fresh composed values; every composed word and value is used at most once overall."""

    def __init__(self, rng: Random):
        self.rng = rng
        self.used = set()
        # composed words must not collide with any word of the world text or the templates
        vocab = [*FIRST_NAMES["f"], *FIRST_NAMES["m"], *TITLE_ADJECTIVES, *TITLE_NOUNS, *GENERIC_SENTENCES,
                 *MONTHS, *THEMES, *SUBJECTS,
                 *(f"{k} {v}" for table in (GENRES, AWARDS, PROFESSIONS) for k, v in table.items()),
                 *(f"{k} {c} {d}" for k, (c, d) in CITIES.items()),
                 *(t for spec in ATTRIBUTES.values() for t in spec["questions"] + spec["answers"]),
                 *(t for ts in WORLD_SENTENCES.values() for t in ts)]
        self.reserved = {w.lower() for w in re.findall(r"\w+", " ".join(vocab))}

    def _unique(self, make, composed=False):
        while True:
            value = make()
            if value not in self.used and not (composed and value.lower() in self.reserved):
                self.used.add(value)
                return value

    def word(self) -> str:
        def make():
            n = self.rng.choice((2, 2, 3))
            return "".join(self.rng.choice(_ONSETS) + self.rng.choice(_VOWELS) + self.rng.choice(_CODAS)
                           for _ in range(n)).capitalize()
        return self._unique(make, composed=True)

    def title(self) -> str:
        r = self.rng

        def make():  # two shapes that can never contain one another ("The ..." vs "... of ...")
            if r.random() < 0.5:
                return f"The {r.choice(TITLE_ADJECTIVES)} {r.choice(TITLE_NOUNS)}"
            return f"{r.choice(TITLE_NOUNS)} of {r.choice(TITLE_ADJECTIVES)} {_plural(r.choice(TITLE_NOUNS))}"
        return self._unique(make)

    def date(self) -> str:
        r = self.rng
        return self._unique(lambda: f"{r.randint(1, 28)} {r.choice(MONTHS)} {r.randint(1921, 1999)}")

    def fresh(self, field: str) -> str:
        """A new unique value of the kind that ``field`` holds."""
        kind = UNIQUE_FIELDS[field]
        if kind == "word":
            return self.word()
        if kind == "person":
            return f"{self.word()} {self.word()}"
        if kind == "title":
            return self.title()
        if kind == "date":
            return self.date()
        if kind == "address":
            r, suffixes = self.rng, ("Lane", "Street", "Road")
            return self._unique(lambda: f"{r.randint(2, 98)} {self.word()} {r.choice(suffixes)}")
        return f"{self.word()} {self.rng.choice(kind)}"  # kind: list of suffixes


def _plural(noun: str) -> str:
    if noun.endswith("y") and noun[-2] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + ("es" if noun.endswith(("s", "x", "ch", "sh")) else "s")


def _pool_values(rng: Random, pool: Sequence[str], n_retain: int, n_other: int):
    """Skewed draws from ``pool`` for ``n_retain`` retain90 authors then ``n_other`` others,
    such that every value in use is held by >= MIN_RETAIN_HOLDERS retain90 authors."""
    active = list(pool[: min(len(pool), n_retain // MIN_RETAIN_HOLDERS)])
    weights = _zipf_weights(len(active))
    retain = [v for v in active for _ in range(MIN_RETAIN_HOLDERS)]
    retain += rng.choices(active, weights, k=n_retain - len(retain))
    rng.shuffle(retain)
    return retain + rng.choices(active, weights, k=n_other), active


# ------------------------------------------------------------------------------ generation
def _n_authors(total: int, percent: int) -> int:
    return max(1, round(total * percent / 100))


def _make_authors(rng: Random, n_authors: int, n_holdout: int):
    """Authors (trained first, then holdout) with all their values; popular values last."""
    n_total = n_authors + n_holdout
    n_retain = n_authors - _n_authors(n_authors, max(FORGET_PERCENTS))
    values = _Values(rng)
    authors = []
    for author_id in range(n_total):
        gender = rng.choice("fm")
        name = f"{rng.choice(FIRST_NAMES[gender])} {values.word()}"
        author = {"author_id": author_id, "gender": gender, "name": name}
        author.update({field: values.fresh(field) for field in UNIQUE_FIELDS if field != "award_book"})
        authors.append(author)
        authors[-1]["award_book"] = authors[-1][rng.choice(("first_book", "second_book"))]
    actives = {}
    for field, pool in POOLS.items():
        drawn, actives[field] = _pool_values(rng, pool, n_retain, n_total - n_retain)
        for author, value in zip(authors, drawn):
            author[field] = value
    return authors, values, actives, n_retain


def _kinds(authors: List[dict], n_retain: int) -> Dict[str, Dict[str, int]]:
    """Per (field, value) kind, from counts: shared iff >= 3 retain90 holders, else the value
    must be unique to one author (checked: the construction guarantees it)."""
    kinds = defaultdict(dict)
    fields = {f for spec in ATTRIBUTES.values() for t in spec["answers"] for f in _fields(t)}
    for field in fields - {"name", *PRONOUN_FIELDS}:
        retain_count = Counter(a[field] for a in authors[:n_retain])
        total_count = Counter(a[field] for a in authors)
        for value, total in total_count.items():
            if retain_count[value] >= MIN_RETAIN_HOLDERS:
                kinds[field][value] = KIND_SHARED
            elif total == 1:
                kinds[field][value] = KIND_SPECIFIC
            else:
                raise AssertionError(f"{field}={value!r} is neither shared nor unique")
    return kinds


def _qa_record(rng, spec, filled, kind, perturb, **meta) -> dict:
    """One QA record from an attribute's templates: the answer and its paraphrase use two
    different templates; ``perturb()`` returns the values swapped into each perturbed answer."""
    q_ids = rng.sample(range(len(spec["questions"])), 2)
    a_ids = rng.sample(range(len(spec["answers"])), 2)
    answer, spans = _render(spec["answers"][a_ids[0]], filled, kind)
    para, para_spans = _render(spec["answers"][a_ids[1]], filled, kind)
    perturbed = []
    while len(perturbed) < 3:  # the paraphrase's wording with every fact swapped
        text = _render(spec["answers"][a_ids[1]], {**filled, **perturb()}, kind)[0]
        if text not in perturbed and text != para:
            perturbed.append(text)
    return {
        "question": spec["questions"][q_ids[0]].format(**filled),
        "answer": answer,
        "paraphrased_answer": para,
        "perturbed_answer": perturbed,
        "paraphrased_question": spec["questions"][q_ids[1]].format(**filled),
        **meta,
        "spans": spans,
        "paraphrased_spans": para_spans,
    }


def _author_records(rng, author, kinds, values, actives, qa_per_author) -> List[dict]:
    filled = {**author, **dict(zip(PRONOUN_FIELDS, PRONOUNS[author["gender"]]))}
    records = []
    for fact in list(ATTRIBUTES)[:qa_per_author]:
        spec = ATTRIBUTES[fact]
        facts = [f for f in _fields(spec["answers"][0]) if f != "name" and f not in PRONOUN_FIELDS]
        kind = {"name": KIND_IGNORE, **{f: KIND_TEMPLATE for f in PRONOUN_FIELDS},
                **{f: kinds[f][author[f]] for f in facts}}

        def perturb():  # popular facts: another popular value; unique facts: a fresh value
            return {f: rng.choice([v for v in actives[f] if v != author[f]]) if f in actives
                    else values.fresh(f) for f in facts}
        records.append(_qa_record(rng, spec, filled, kind, perturb, author=author["name"],
                                  author_id=author["author_id"], fact=fact))
    return records


def _world(rng: Random):
    """Generic sentences about every popular value, and QA probes answerable from them."""
    tables = {
        "city": {c: {"country": country, "desc": desc} for c, (country, desc) in CITIES.items()},
        "genre": {g: {"desc": d} for g, d in GENRES.items()},
        "award": {a: {"desc": d} for a, d in AWARDS.items()},
        "job": {j: {"desc": d} for j, d in PROFESSIONS.items()},
        "theme": {t: {} for t in THEMES},
        "subject": {s: {} for s in SUBJECTS},
    }
    text = list(GENERIC_SENTENCES)
    for table, rows in tables.items():
        for x, extra in rows.items():
            text += [t.format(x=x, **extra) for t in WORLD_SENTENCES[table]]
    rng.shuffle(text)

    records = []
    kind = {"key": KIND_IGNORE, "value": KIND_SHARED}  # world knowledge is never forget-specific
    for fact, spec in WORLD_FACTS.items():
        table = spec["table"]
        for key, value in table.items():
            others = [v for v in table.values() if v != value]
            records.append(_qa_record(rng, spec, {"key": key, "value": value}, kind,
                                      lambda: {"value": rng.choice(others)},
                                      author="", author_id=-1, fact=f"world_{fact}"))
    return text, records


def generate_benchmark(seed: int = 0, n_authors: int = 200, n_holdout: int = 20,
                       qa_per_author: int = 10) -> dict:
    """Return split name -> list of records (``world_text``: list of strings).

    Each author gets one QA per attribute, for the first ``qa_per_author`` attributes of
    ``ATTRIBUTES``. ``forgetNN`` holds the last NN % of the ``n_authors`` authors (at least
    one), ``retainNN`` the rest, ``holdoutNN`` the first as many holdout authors.

    Deterministic: only ``random.Random(seed)`` is used, so the same arguments give the
    same output byte for byte."""
    n_forget = {p: _n_authors(n_authors, p) for p in FORGET_PERCENTS}
    if n_authors < 10:
        raise ValueError(f"n_authors={n_authors}: need at least 10 authors (forget10 and a retain set)")
    if not 1 <= qa_per_author <= len(ATTRIBUTES):
        raise ValueError(f"qa_per_author={qa_per_author}: must be between 1 and {len(ATTRIBUTES)} "
                         "(one QA per attribute)")
    if n_holdout < n_forget[max(FORGET_PERCENTS)]:
        raise ValueError(f"n_holdout={n_holdout} must be >= the forget10 author count ({n_forget[10]}) "
                         "so that holdout10 is sized like forget10")
    rng = Random(seed)
    authors, values, actives, n_retain = _make_authors(rng, n_authors, n_holdout)
    kinds = _kinds(authors, n_retain)
    per_author = [_author_records(rng, a, kinds, values, actives, qa_per_author) for a in authors]
    world_text, world_facts = _world(rng)

    def flat(chunks):
        return [r for chunk in chunks for r in chunk]

    trained, holdout = per_author[:n_authors], per_author[n_authors:]
    splits = {"full": flat(trained)}
    for p in FORGET_PERCENTS:
        k = n_forget[p]
        splits[f"forget{p:02d}"] = flat(trained[n_authors - k:])
        splits[f"retain{100 - p}"] = flat(trained[: n_authors - k])
        splits[f"holdout{p:02d}"] = flat(holdout[:k])
    splits["holdout"] = flat(holdout)
    splits["world_facts"] = world_facts
    splits["world_text"] = world_text
    return splits


# ------------------------------------------------------------------------------ files
def _dump(obj) -> str:
    return json.dumps(obj, ensure_ascii=False, indent=1) + "\n"


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; these are shared data files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_benchmark(out_dir: Union[str, Path], seed: int = 0, splits: Optional[Dict[str, list]] = None,
                    **kw) -> Dict[str, Path]:
    """Write ``<split>.json`` per split (TOFU-style JSON lists) and ``meta.json`` (generator
    version and arguments) into ``out_dir``, each file atomically. Returns split -> path.
    ``splits``: the output of ``generate_benchmark(seed, **kw)`` if the caller already has it
    (it is not generated a second time)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    args = inspect.signature(generate_benchmark).bind(seed=seed, **kw)
    args.apply_defaults()
    if splits is None:
        splits = generate_benchmark(*args.args, **args.kwargs)
    paths = {}
    for name, records in splits.items():
        paths[name] = out / f"{name}.json"
        _write_atomic(paths[name], _dump(records))
    _write_atomic(out / "meta.json", _dump({"generator_version": GENERATOR_VERSION, **args.arguments}))
    return paths


REQUIRED_FIELDS = ("question", "answer")


def load_split(path: Union[str, Path]) -> List[dict]:
    """Read a TOFU-style split: a JSON list of records or JSON Lines (one record per line).

    Validates every record (``record i`` counts from 0, the dataset index; JSON Lines
    records also name their line) and raises ``FileNotFoundError`` / ``PermissionError`` /
    ``ValueError`` messages that name the file."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path}: is a directory; expected a benchmark split file (JSON list or JSON Lines)")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: benchmark split not found")
    try:
        data = path.read_bytes()
    except PermissionError:
        raise PermissionError(f"{path}: cannot read benchmark split (permission denied)") from None
    except OSError as e:
        raise OSError(f"{path}: cannot read benchmark split: {e.strerror or e}") from None
    text = decode_text(data, str(path), "a JSON list or JSON Lines file")
    lines = None  # JSON Lines: the line of each record
    if text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: malformed JSON at line {e.lineno}, column {e.colno}: {e.msg}") \
                from None
    else:  # JSON Lines
        records, lines = [], []
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                try:  # one pretty-printed JSON value rather than JSON Lines?
                    whole = json.loads(text)
                except json.JSONDecodeError:
                    raise ValueError(f"{path}: malformed JSON at line {lineno}, column {e.colno}: {e.msg}") \
                        from None
                raise ValueError(f"{path}: expected a JSON list of records or JSON Lines, got a single "
                                 f"{type(whole).__name__}") from None
            lines.append(lineno)
    if not isinstance(records, list):
        raise ValueError(f"{path}: expected a JSON list of records, got {type(records).__name__}")
    if not records:
        raise ValueError(f"{path}: empty split (no records)")
    check_records(path, records, lines)
    return records


def check_records(path, records: list, lines: Optional[List[int]] = None) -> None:
    """Validate QA records read from ``path`` (``lines``: the line of each JSON Lines record):
    objects with a string ``question`` and a string (or list of strings) ``answer``, valid
    spans. ``ValueError`` naming the file, the record and its line otherwise."""
    expected = ", ".join(REQUIRED_FIELDS)
    for i, record in enumerate(records):
        where = f"{path}: record {i}" + (f" (line {lines[i]})" if lines else "")
        if not isinstance(record, dict):
            raise ValueError(f"{where}: expected an object with keys {expected}, "
                             f"got {type(record).__name__}")
        for key in REQUIRED_FIELDS:
            if key not in record:
                raise ValueError(f"{where}: missing field {key!r} (expected keys: {expected})")
        if not isinstance(record["question"], str):
            raise ValueError(f"{where}: field 'question' must be a string, got {type(record['question']).__name__}")
        answer = record["answer"]
        is_list = isinstance(answer, list) and all(isinstance(a, str) for a in answer)
        if not (isinstance(answer, str) or is_list):
            raise ValueError(f"{where}: field 'answer' must be a string or a list of strings, "
                             f"got {type(answer).__name__}")
        for text_key, spans_key in (("answer", "spans"), ("paraphrased_answer", "paraphrased_spans")):
            if spans_key in record and isinstance(record.get(text_key), str):
                try:
                    validate_spans(record[text_key], record[spans_key])
                except ValueError as e:
                    raise ValueError(f"{where}: {spans_key!r} of {text_key!r}: {e}") from None
