import json
import re
from collections import defaultdict

import pytest

from atwu_plugin.data.generator import (
    ATTRIBUTES, CITIES, GENERATOR_VERSION, POOLS, generate_benchmark, load_split, validate_spans,
    write_benchmark,
)
from atwu_plugin.tokens import KIND_IGNORE, KIND_SHARED, KIND_SPECIFIC, KIND_TEMPLATE


@pytest.fixture(scope="module")
def bench():
    return generate_benchmark(seed=0)


def _values(record, kind, key="answer", spans_key="spans"):
    return [record[key][s:e] for s, e, k in record[spans_key] if k == kind]


def _authors(records):
    return sorted({r["author_id"] for r in records})


def _words(text):
    return tuple(re.findall(r"\w+|[^\w\s]", text))


def _ngrams(text, n_max=6):
    """Every run of up to ``n_max`` words: a whole-word substring test by set lookup."""
    w = _words(text)
    return {w[i:j] for i in range(len(w)) for j in range(i + 1, min(i + n_max, len(w)) + 1)}


def test_write_is_deterministic(tmp_path):
    kw = dict(n_authors=20, n_holdout=4)
    a = write_benchmark(tmp_path / "a", seed=3, **kw)
    b = write_benchmark(tmp_path / "b", seed=3, **kw)
    c = write_benchmark(tmp_path / "c", seed=4, **kw)
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "b").iterdir())
    assert "world_text.json" in names and "forget10.json" in names and "meta.json" in names
    assert not [n for n in names if n.endswith(".tmp")]
    for split in a:
        assert a[split].read_bytes() == b[split].read_bytes(), split
    assert a["full"].read_bytes() != c["full"].read_bytes()
    meta = json.loads((tmp_path / "a" / "meta.json").read_text())
    assert meta["generator_version"] == GENERATOR_VERSION and meta["seed"] == 3
    assert load_split(a["forget10"]) == json.loads(a["forget10"].read_text())


def test_default_sizes_and_split_layout(bench):
    full = bench["full"]
    assert len(full) == 200 * 10 and len(_authors(full)) == 200
    for p, n in ((1, 2), (5, 10), (10, 20)):
        forget, retain, holdout = bench[f"forget{p:02d}"], bench[f"retain{100 - p}"], bench[f"holdout{p:02d}"]
        assert _authors(forget) == list(range(200 - n, 200))  # the last authors, like TOFU
        assert retain + forget == full
        assert len(holdout) == len(forget) and len(_authors(holdout)) == n
        assert _authors(holdout) == _authors(bench["holdout"])[:n]
    held = {r["author"] for r in bench["holdout"]}
    assert len(_authors(bench["holdout"])) == 20 and not held & {r["author"] for r in full}
    assert len(ATTRIBUTES) == 10 and all(len(a["answers"]) >= 3 and len(a["questions"]) >= 3
                                         for a in ATTRIBUTES.values())
    assert len(bench["world_facts"]) > 20 and all(isinstance(s, str) for s in bench["world_text"])


def test_records_schema_spans_and_perturbations(bench):
    for split in ("full", "holdout", "world_facts"):
        for r in bench[split]:
            validate_spans(r["answer"], r["spans"])
            validate_spans(r["paraphrased_answer"], r["paraphrased_spans"])
            assert r["paraphrased_answer"] != r["answer"]
            perturbed = r["perturbed_answer"]
            assert len(perturbed) >= 3 and len(set(perturbed)) == len(perturbed)
            assert r["answer"] not in perturbed and r["paraphrased_answer"] not in perturbed
            assert r["paraphrased_question"] != r["question"]
            if r["author_id"] >= 0:
                assert r["author"] in r["question"]
                # every name copy is ignored, nothing else is
                assert all(v == r["author"] for v in _values(r, KIND_IGNORE))


def test_same_facts_in_answer_and_paraphrase(bench):
    for r in bench["full"][:300]:
        for kind in (KIND_SPECIFIC, KIND_SHARED):
            assert sorted(_values(r, kind)) == sorted(
                _values(r, kind, "paraphrased_answer", "paraphrased_spans"))


def test_shared_and_specific_values_by_counts(bench):
    retain90 = {r["author_id"] for r in bench["retain90"]}
    holders = defaultdict(set)  # (fact, value) -> authors; value -> authors (any fact)
    for r in bench["full"] + bench["holdout"]:
        for kind in (KIND_SHARED, KIND_SPECIFIC):
            for v in _values(r, kind):
                holders[r["fact"], v].add(r["author_id"])
    said_by = defaultdict(set)  # word n-gram -> authors whose answers contain it
    for r in bench["full"] + bench["holdout"]:
        for gram in _ngrams(r["answer"]) | _ngrams(r["paraphrased_answer"]):
            said_by[gram].add(r["author_id"])
    n_shared = n_specific = 0
    for r in bench["full"] + bench["holdout"]:
        for v in _values(r, KIND_SHARED):
            assert len(holders[r["fact"], v] & retain90) >= 3, (r["fact"], v)
            n_shared += 1
        for v in _values(r, KIND_SPECIFIC):
            n_specific += 1
            assert holders[r["fact"], v] == {r["author_id"]}
            assert len(_words(v)) <= 6 and said_by[_words(v)] == {r["author_id"]}, v
    assert n_shared > 1000 and n_specific > 2000


def test_shared_values_are_popular_and_skewed(bench):
    cities = defaultdict(int)
    for r in bench["retain90"]:
        if r["fact"] == "birthplace":
            cities[_values(r, KIND_SHARED)[0]] += 1
    assert set(cities) == set(CITIES)
    counts = sorted(cities.values(), reverse=True)
    assert min(counts) >= 3 and counts[0] >= 4 * counts[-1]  # Zipf-skewed, every value shared


def test_world_text_has_vocabulary_but_no_author_facts(bench):
    text = "\n".join(bench["world_text"])
    lower = text.lower()
    for pool in POOLS.values():
        for value in pool:
            assert value.lower() in lower, value
    grams = _ngrams(text)
    for r in bench["full"] + bench["holdout"]:
        assert _words(r["author"]) not in grams and _words(r["author"])[-1:] not in grams
        for v in _values(r, KIND_SPECIFIC):
            assert _words(v) not in grams, v
    for r in bench["world_facts"]:  # probes are answerable from the world text
        key, fact = _values(r, KIND_IGNORE)[0], _values(r, KIND_SHARED)[0]
        assert any(key in s and fact in s for s in bench["world_text"]), r["question"]


def test_content_mix(bench):
    chars = defaultdict(int)
    words = []
    for r in bench["full"]:
        words.append(len(r["answer"].split()))
        for s, e, k in r["spans"]:
            chars[k] += e - s
    total = sum(chars.values())
    assert 0.25 <= chars[KIND_SPECIFIC] / total <= 0.40
    assert chars[KIND_SHARED] / total > 0.05 and chars[KIND_TEMPLATE] / total > 0.3
    assert min(words) >= 8 and max(words) <= 40 and len(set(words)) >= 6


def test_small_benchmark_and_argument_errors():
    small = generate_benchmark(seed=1, n_authors=10, n_holdout=1, qa_per_author=3)
    assert len(small["full"]) == 30 and len(small["forget10"]) == 3 and len(small["holdout10"]) == 3
    with pytest.raises(ValueError, match="n_authors"):
        generate_benchmark(n_authors=5)
    with pytest.raises(ValueError, match="qa_per_author"):
        generate_benchmark(n_authors=20, n_holdout=2, qa_per_author=11)
    with pytest.raises(ValueError, match="n_holdout"):
        generate_benchmark(n_authors=200, n_holdout=5)


def test_load_split_errors(tmp_path):
    missing = tmp_path / "nope.json"
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_split(missing)
    bad = tmp_path / "bad.json"
    bad.write_text('[{"question": "q", "answer": "a"},\n {"question": }]')
    with pytest.raises(ValueError, match=r"bad.json: malformed JSON at line 2, column"):
        load_split(bad)
    bad_lines = tmp_path / "bad.jsonl"
    bad_lines.write_text('{"question": "q", "answer": "a"}\n{"question": "q" "answer": "a"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl: malformed JSON at line 2, column"):
        load_split(bad_lines)
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    with pytest.raises(ValueError, match="empty.json: empty split"):
        load_split(empty)
    records = [{"question": "q", "answer": "a"}] * 3 + [{"question": "q"}]
    no_answer = tmp_path / "no_answer.json"
    no_answer.write_text(json.dumps(records))
    with pytest.raises(ValueError) as err:
        load_split(no_answer)
    expected = f"{no_answer}: record 3: missing field 'answer' (expected keys: question, answer)"
    assert str(err.value) == expected
    bad_spans = tmp_path / "spans.json"
    bad_spans.write_text(json.dumps([{"question": "q", "answer": "abc", "spans": [[0, 2, 0]]}]))
    with pytest.raises(ValueError, match="record 0: 'spans'"):
        load_split(bad_spans)
    good = tmp_path / "good.jsonl"
    good.write_text('{"question": "q", "answer": "a"}\n\n{"question": "r", "answer": ["b", "c"]}\n')
    assert [r["question"] for r in load_split(good)] == ["q", "r"]
