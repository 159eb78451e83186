"""Ground-truth token labels for the real TOFU data (docs/results/tofu_honest.md explains both
label sources).

Two label sources, to be reported side by side (never one alone):

1. **Model-free word labels** (``word_labels``) from TOFU's own ``forgetNN_perturbed.json``:
   the perturbed answers keep the paraphrase's scaffolding and swap the facts.

   *Words.* A word is a maximal run of non-whitespace characters (``WORD_RE = r"\\S+"``).
   Its *core* is the word with non-alphanumeric characters stripped from both edges
   (``CORE_RE``): ``"Yun-Hwa."`` -> ``Yun-Hwa``, ``"LGBTQ+"`` -> ``LGBTQ``,
   ``"\\"The`` -> ``The``; inner punctuation stays (``08/09/1956``, ``author's``).
   A word whose core is empty (``"--"``, ``"&"``) is not a word.
   Words are compared by ``word_key(core)``: NFKC-normalised, case-folded, curly
   apostrophes made straight, and a possessive ending ``'s`` / ``'`` removed (so the name
   in ``"Hsiao Yun-Hwa's"`` in the question matches ``Yun-Hwa`` in the answer).

   *Rule*, applied to every word of the ANSWER, first match wins:
     a. the word occurs in the question -> ``KIND_IGNORE`` (names and other copied words);
     b. it occurs in the paraphrased answer and in none of the perturbed answers
        -> ``KIND_SPECIFIC`` (fact word);
     c. it occurs in the paraphrased answer and in every perturbed answer
        -> ``KIND_TEMPLATE`` (generic);
     d. otherwise -> ``KIND_IGNORE`` (unlabelled; e.g. in some but not all perturbed answers,
        or not in the paraphrase).
   "Occurs in" means the text's set of word keys contains the key.

   *Characters.* The core of a word gets the word's kind. Everything else -- whitespace and
   the punctuation stripped from word edges -- is ``KIND_IGNORE``, so ``encode_qa``'s token
   rule labels a token only through the word characters it covers ("Paris" in ``" Paris,"``).
   Caveat of ``encode_qa`` (not changed here): a token made only of whitespace is always
   ``KIND_TEMPLATE`` and the appended eos is ``KIND_TEMPLATE``; ``label_stats`` counts the
   eos apart. Adjacent characters of the same kind are merged into one span; the spans tile
   the answer exactly (checked with ``validate_spans``).

2. **Retain-model proxy labels** (``proxy_labels``): ``d_t = log p_target - log p_retain``;
   specific if ``d_t > 1`` nat and ``p_retain < 0.1``; generic if ``d_t < 0.2``; else
   unlabelled. A weak label: report its class sizes per token type.

Loaders: ``load_tofu_split`` reads one TOFU file (JSON Lines, as vendored in
``/work/shared/data/tofu``; a line holding a JSON array of records and a whole-file JSON
array are accepted too) and checks the fields that file must have; ``tofu_records_with_spans``
returns ``forgetNN_perturbed`` records with ``spans`` for ``QADataset`` / ``TofuEvaluator``.
"""

import json
import math
import re
import unicodedata
from collections import Counter
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import torch

from atwu_plugin.data.encoding import encode_qa, tokenize_qa
from atwu_plugin.data.generator import validate_spans
from atwu_plugin.tokens import KIND_IGNORE, KIND_NAMES, KIND_NONE, KIND_SPECIFIC, KIND_TEMPLATE

# ----------------------------------------------------------------------------- words
WORD_RE = re.compile(r"\S+")
# the core: from the first to the last alphanumeric character of the word (\w minus "_")
CORE_RE = re.compile(r"[^\W_](?:.*[^\W_])?", re.S)
_POSSESSIVE_RE = re.compile(r"(?<=\w)'s?$")


def word_key(core: str) -> str:
    """Comparison key of a word core: NFKC, case-folded, straight apostrophes, no possessive."""
    key = unicodedata.normalize("NFKC", core).casefold().replace("\u2019", "'").replace("\u2018", "'")
    return _POSSESSIVE_RE.sub("", key) or key


def word_cores(text: str) -> List[Tuple[int, int, str]]:
    """``(start, end, core)`` of every word of ``text`` with a non-empty core, in order."""
    out = []
    for m in WORD_RE.finditer(text):
        core = CORE_RE.search(m.group())
        if core:
            out.append((m.start() + core.start(), m.start() + core.end(), core.group()))
    return out


def word_set(text: str) -> set:
    return {word_key(core) for _, _, core in word_cores(text)}


def word_kind(key: str, question: set, paraphrase: set, perturbed: Sequence[set]) -> int:
    """The word rule of the module doc for one word key."""
    if key in question:
        return KIND_IGNORE
    if key in paraphrase:
        hits = sum(key in p for p in perturbed)
        if hits == 0:
            return KIND_SPECIFIC
        if hits == len(perturbed):
            return KIND_TEMPLATE
    return KIND_IGNORE


def word_labels(question: str, answer: str, paraphrased_answer: str,
                perturbed_answers: Sequence[str]) -> List[List[int]]:
    """Character spans ``[[start, end, kind], ...]`` tiling ``answer`` (see module doc)."""
    if isinstance(perturbed_answers, str):
        raise TypeError("perturbed_answers must be a list of strings, not a string")
    perturbed_answers = list(perturbed_answers)
    if not perturbed_answers:
        raise ValueError("word_labels needs at least one perturbed answer (with none, every "
                         "paraphrase word would be both a fact word and generic)")
    for name, text in (("question", question), ("answer", answer), ("paraphrased_answer", paraphrased_answer),
                       *((f"perturbed_answers[{i}]", p) for i, p in enumerate(perturbed_answers))):
        if not isinstance(text, str):
            raise TypeError(f"{name} must be a string, got {type(text).__name__}")
    q, para = word_set(question), word_set(paraphrased_answer)
    pert = [word_set(p) for p in perturbed_answers]
    spans: List[List[int]] = []

    def add(start, end, kind):
        if end <= start:
            return
        if spans and spans[-1][2] == kind and spans[-1][1] == start:
            spans[-1][1] = end
        else:
            spans.append([start, end, kind])

    pos = 0
    for start, end, core in word_cores(answer):
        add(pos, start, KIND_IGNORE)
        add(start, end, word_kind(word_key(core), q, para, pert))
        pos = end
    add(pos, len(answer), KIND_IGNORE)
    validate_spans(answer, spans)
    return spans


# ----------------------------------------------------------------------------- loaders
_QA = ("question", "answer")
_PERTURBED = ("question", "answer", "paraphrased_answer", "perturbed_answer", "paraphrased_question")
_OPTIONS = ("question", "option1", "option2", "option3", "option4", "answer")
_LIST_FIELDS = ("perturbed_answer",)


def required_fields(name: str) -> Tuple[str, ...]:
    """Fields every record of TOFU file ``name`` (without ``.json``) has, from the files."""
    if name in ("real_authors_perturbed", "world_facts_perturbed"):
        return ("question", "answer", "perturbed_answer")
    if name.endswith("_perturbed"):  # forgetNN_perturbed, retain_perturbed
        return _PERTURBED
    if name in ("real_authors", "world_facts"):
        return _OPTIONS
    return _QA  # full, forgetNN, retainNN, holdoutNN, anything else


def _parse_records(path: Path, text: str) -> List[Tuple[int, object]]:
    """``(line number, record)`` pairs from JSON Lines (a line may hold an array of records)
    or from one whole-file JSON array (line numbers then count from its first line)."""
    if text.lstrip().startswith("["):
        try:
            whole = json.loads(text)
        except json.JSONDecodeError:
            whole = None  # batched arrays: one array per line, parsed below
        if isinstance(whole, list):
            first = text[: len(text) - len(text.lstrip())].count("\n") + 1
            return [(first, r) for r in whole]
    out = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: line {lineno}: malformed JSON at column {e.colno}: {e.msg}") from None
        out += [(lineno, r) for r in obj] if isinstance(obj, list) else [(lineno, obj)]
    return out


def load_tofu_split(data_dir: Union[str, Path], name: str,
                    required: Optional[Sequence[str]] = None) -> List[dict]:
    """Records of TOFU file ``<data_dir>/<name>.json`` (``name`` may end in ``.json``).

    Checks that every record is an object with the fields of ``required_fields(name)`` (or
    ``required``): strings, and ``perturbed_answer`` a non-empty list of strings. Errors name
    the file, and the line and field where relevant."""
    stem = name[:-5] if name.endswith(".json") else name
    path = Path(data_dir) / f"{stem}.json"
    if not path.is_file():
        where = Path(data_dir)
        have = sorted(p.stem for p in where.glob("*.json")) if where.is_dir() else None
        hint = f"; available: {', '.join(have)}" if have else ("" if have is not None else
                                                              f" ({where} is not a directory)")
        raise FileNotFoundError(f"{path}: TOFU split {stem!r} not found{hint}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 ({e.reason} at byte {e.start})") from None
    fields = tuple(required) if required is not None else required_fields(stem)
    records = []
    for lineno, record in _parse_records(path, text):
        if not isinstance(record, dict):
            raise ValueError(f"{path}: line {lineno}: expected a JSON object, got {type(record).__name__}")
        for key in fields:
            if key not in record:
                raise ValueError(f"{path}: line {lineno}: missing field {key!r} "
                                 f"(expected: {', '.join(fields)})")
            value = record[key]
            if key in _LIST_FIELDS:
                if not (isinstance(value, list) and value and all(isinstance(v, str) for v in value)):
                    raise ValueError(f"{path}: line {lineno}: field {key!r} must be a non-empty "
                                     "list of strings")
            elif not isinstance(value, str):
                raise ValueError(f"{path}: line {lineno}: field {key!r} must be a string, "
                                 f"got {type(value).__name__}")
        records.append(record)
    if not records:
        raise ValueError(f"{path}: no records")
    return records


def tofu_records_with_spans(data_dir: Union[str, Path], forget_split: str = "forget10") -> List[dict]:
    """Forget records of ``<forget_split>_perturbed.json`` with model-free ``spans``.

    Each record: ``question``, ``answer``, ``paraphrased_answer``, ``perturbed_answer``
    (list), ``paraphrased_question`` and ``spans`` (``word_labels`` of the answer), ready for
    ``QADataset(records, ...)`` and ``TofuEvaluator(splits={"forget": records, ...})``."""
    name = forget_split[:-5] if forget_split.endswith(".json") else forget_split
    name = name if name.endswith("_perturbed") else f"{name}_perturbed"
    out = []
    for record in load_tofu_split(data_dir, name, required=_PERTURBED):
        spans = word_labels(record["question"], record["answer"], record["paraphrased_answer"],
                            record["perturbed_answer"])
        out.append({key: record[key] for key in _PERTURBED} | {"spans": spans})
    return out


# ----------------------------------------------------------------------------- statistics
# Small English stop-word list: articles, pronouns and possessives, auxiliaries and common
# verbs' forms of be/have/do, prepositions, conjunctions, a few frequent adverbs/determiners.
STOPWORDS = frozenset("""
a an the this that these those
i me my mine we us our ours you your yours he him his she her hers it its they them their theirs
who whom whose which what where when why how
is am are was were be been being has have had having do does did done
will would shall should can could may might must
of in on at by for with about against between into through during before after above below
to from up down out off over under as than
and or but nor so if then because while although though yet also not no
there here all any both each few more most other some such only own same very just too
""".split())
TOKEN_TYPES = ("stopword", "punctuation", "capitalised", "other")


def token_type(answer: str, start: int, end: int, cores: Sequence[Tuple[int, int, str]]) -> str:
    """Type of a token covering ``answer[start:end]``, first match wins:
    ``punctuation`` if it covers no letter/digit (whitespace, symbols, no answer character);
    else, for the word whose core holds the token's first letter/digit:
    ``stopword`` if its key (or lowercase core) is in ``STOPWORDS``, ``capitalised`` if the core
    starts with an uppercase letter, ``other`` otherwise (lowercase words, numbers)."""
    first = next((i for i in range(start, end) if answer[i].isalnum()), None)
    if first is None:
        return "punctuation"
    for s, e, core in cores:
        if s <= first < e:
            if word_key(core) in STOPWORDS or core.casefold() in STOPWORDS:
                return "stopword"
            return "capitalised" if core[0].isupper() else "other"
    return "other"  # unreachable: an alphanumeric character always lies in a word core


def label_stats(records: Sequence[dict], tokenizer, template_args: dict, max_length: int = 512,
                include_eos: bool = False) -> dict:
    """Class sizes of the model-free labels at token level (after ``encode_qa``'s token rule).

    ``records`` carry ``question``, ``answer`` and ``spans`` (computed with ``word_labels``
    when absent). Returns ``n_tokens`` (answer tokens, eos excluded unless ``include_eos``),
    ``n_labelled`` / ``fraction_labelled`` (kind specific or template), ``kinds`` (count per
    kind name), ``by_type`` (``{token type: {kind name: count, "total": n}}``, types from
    ``token_type``), ``eos`` (count and kinds of the appended eos tokens, always template).
    """
    names = {k: KIND_NAMES[k] for k in (KIND_SPECIFIC, KIND_TEMPLATE, KIND_IGNORE)}
    by_type = {t: Counter({n: 0 for n in names.values()}) for t in TOKEN_TYPES}
    eos = Counter()
    for i, r in enumerate(records):
        spans = r.get("spans")
        if spans is None:
            spans = word_labels(r["question"], r["answer"], r["paraphrased_answer"], r["perturbed_answer"])
        enc = encode_qa(tokenizer, template_args, r["question"], r["answer"], max_length, spans=spans)
        tok, _, prompt_len, _ = tokenize_qa(tokenizer, template_args, r["question"], r["answer"], max_length,
                                            offsets=True)
        n_tok = len(tok["input_ids"])
        if list(tok["input_ids"]) != enc.input_ids[:n_tok].tolist():
            raise RuntimeError(f"record {i}: re-tokenization differs from encode_qa")
        cores = word_cores(r["answer"])
        end = prompt_len + len(r["answer"])
        for t, kind in enumerate(enc.token_kind.tolist()):
            if kind == KIND_NONE:
                continue
            # eos, and a chat template's end-of-turn tokens after the answer, are counted apart
            if t >= n_tok or enc.input_ids[t] == tokenizer.eos_token_id or tok["offset_mapping"][t][0] >= end > 0:
                eos[names[kind]] += 1
                continue
            s, e = tok["offset_mapping"][t]
            a, b = max(s - prompt_len, 0), min(e - prompt_len, len(r["answer"]))
            by_type[token_type(r["answer"], a, b, cores)][names[kind]] += 1
    if include_eos:
        by_type["punctuation"].update(eos)
    kinds = Counter()
    for c in by_type.values():
        kinds.update(c)
    n_tokens = sum(kinds.values())
    n_labelled = kinds[names[KIND_SPECIFIC]] + kinds[names[KIND_TEMPLATE]]
    return {
        "n_answers": len(records),
        "n_tokens": n_tokens,
        "n_labelled": n_labelled,
        "fraction_labelled": n_labelled / n_tokens if n_tokens else math.nan,
        "kinds": {n: kinds[n] for n in names.values()},
        "by_type": {t: {**{n: c[n] for n in names.values()}, "total": sum(c.values())}
                    for t, c in by_type.items()},
        "eos": {"n": sum(eos.values()), **{n: eos[n] for n in names.values()}, "included": include_eos},
    }


# ----------------------------------------------------------------------------- proxy labels
def proxy_labels(target_logp: torch.Tensor, retain_logp: torch.Tensor, mask: Optional[torch.Tensor],
                 specific_margin: float = 1.0, specific_max_p_retain: float = 0.1,
                 generic_margin: float = 0.2) -> torch.Tensor:
    """Retain-model proxy kinds ``[B, T]`` (long), aligned with labels like the inputs.

    ``d = target_logp - retain_logp`` (nats, per-token log-probabilities of the label token,
    e.g. ``token_logprobs``). On ``mask`` (bool ``[B, T]``, e.g. ``answer_mask(labels)``;
    ``None`` = everywhere): ``KIND_SPECIFIC`` if ``d > specific_margin`` and
    ``p_retain < specific_max_p_retain``; ``KIND_TEMPLATE`` (generic) if ``d < generic_margin``;
    else ``KIND_IGNORE`` (also where ``d`` is NaN). Off ``mask``: ``KIND_NONE``."""
    if target_logp.shape != retain_logp.shape:
        raise ValueError(f"target_logp {tuple(target_logp.shape)} and retain_logp "
                         f"{tuple(retain_logp.shape)} must have the same shape")
    if mask is None:
        mask = torch.ones_like(target_logp, dtype=torch.bool)
    if mask.shape != target_logp.shape:
        raise ValueError(f"mask {tuple(mask.shape)} must have the shape of the log-probs "
                         f"{tuple(target_logp.shape)}")
    if not generic_margin <= specific_margin:
        raise ValueError(f"generic_margin={generic_margin} must be <= specific_margin={specific_margin}")
    tgt, ret = target_logp.double(), retain_logp.double()
    d = tgt - ret
    specific = (d > specific_margin) & (ret < math.log(specific_max_p_retain))  # NaN compares False
    generic = d < generic_margin
    kinds = torch.full(target_logp.shape, KIND_IGNORE, dtype=torch.long, device=target_logp.device)
    kinds[generic] = KIND_TEMPLATE
    kinds[specific] = KIND_SPECIFIC
    kinds[~mask.bool()] = KIND_NONE
    return kinds
