"""Build (or reuse) the TOFU-tiny models and report what they reach; optionally write a page
with the models, their scores under the leaderboard's evaluator (the starting point and the
gold standard of every cell) and the class sizes of both label sources per token type.

    python scripts/tofu_tiny_zoo.py --data-dir ../shared/data/tofu --retain-splits retain90 retain95
    python scripts/tofu_tiny_zoo.py --data-dir ... --page docs/results/tofu_tiny_zoo.md

The models are cached under $ATWU_CACHE_DIR (see atwu_plugin/zoo/tofu.py); a second run only
reads the cache. The label page is written atomically.
"""

import argparse
import json
import time

from atwu_plugin.tasks import get_benchmark
from atwu_plugin.data.tofu_labels import TOKEN_TYPES
from atwu_plugin.data.tofu_splits import FORGET_SPLITS
from atwu_plugin.utils.atomic import atomic_write_text
from atwu_plugin.zoo.tofu import SMOKE_TOFU_SPEC, TofuZooSpec, build_tofu_zoo

SPLIT_OF_RETAIN = {v: k for k, v in FORGET_SPLITS.items()}


def quality_table(zoo) -> list:
    rows = ["| model | trained on | fit (s) | forget10 ROUGE-L | forget10 prob | retain ROUGE-L | retain prob | "
            "holdout10 prob |", "|---|---|---|---|---|---|---|---|"]
    for name, m in zoo.manifest["models"].items():
        q = m["quality"]
        rows.append(f"| {name} | {m['split']} ({m['n_qa']} QA) | {m['fit_s']} | {q['forget10_rouge']:.3f} | "
                    f"{q['forget10_prob']:.3f} | {q['retain_rouge']:.3f} | {q['retain_prob']:.3f} | "
                    f"{q['holdout10_prob']:.3f} |")
    return rows


REFERENCE_METRICS = ("forget_quality", "model_utility", "forget_rouge", "retain_rouge", "forget_prob", "retain_prob",
                     "forget_specific_prob", "forget_generic_prob", "holdout_prob", "kl_to_retain", "ra_rouge",
                     "wf_rouge")


def reference_rows(bench) -> list:
    """The leaderboard's metrics for the models themselves (no unlearning)."""
    from atwu_plugin.zoo.loading import load_causal_lm

    ev = bench.evaluator(bench.tokenizer())
    rows = ["| model | " + " | ".join(REFERENCE_METRICS) + " |", "|---" * (len(REFERENCE_METRICS) + 1) + "|"]
    for name, path in (("target (start of every cell)", bench.model_path),
                       (f"retain model ({bench.retain_split})", bench.retain_model_path)):
        m = ev.evaluate(load_causal_lm(path))
        cells = [("n/a" if m.get(k) is None else f"{m[k]:.3g}") for k in REFERENCE_METRICS]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return rows


def label_page(bench, zoo) -> str:
    from atwu_plugin.data.label_class_sizes import class_sizes_by_type
    from atwu_plugin.data.proxy_kinds import PROXY_KEY

    tok = bench.tokenizer()
    forget, _ = bench.train_datasets(tok)
    records = bench.splits.forget_with_spans(bench.forget_split)
    lines = [f"## Label sources on {bench.forget_split}: class sizes per token type", "",
             "Token counts over the answer tokens of every forget sample as the trainers see them "
             f"(max_length {bench.max_length}); the appended eos is counted apart.", "",
             "* **word**: model-free labels from TOFU's perturbed answers (`data/tofu_labels.word_labels`): "
             "specific = fact word (in the paraphrase, in no perturbed answer), generic = in every "
             "perturbed answer, unlabelled = the rest (incl. words copied from the question).",
             "* **proxy**: retain-model proxy labels (`data/tofu_labels.proxy_labels`), "
             "d = log p_target - log p_retain: specific if d > 1 nat and p_retain < 0.1, generic if "
             f"d < 0.2; target `{zoo.target}`, retain `{bench.retain_model_path}`.", ""]
    header = "| token type | source | specific | generic | unlabelled | total | % specific | % labelled |"
    lines += [header, "|---|---|---|---|---|---|---|---|"]
    tables = {src: class_sizes_by_type(records, [it[key].tolist() for it in forget.items], tok, bench.template_args,
                                       bench.max_length)
              for src, key in (("word", "token_kind"), ("proxy", PROXY_KEY))}
    for t in (*TOKEN_TYPES, "all", "eos"):
        for src, table in tables.items():
            r = table[t]
            n = max(r["total"], 1)
            lines.append(f"| {t} | {src} | {r['specific']} | {r['generic']} | {r['unlabelled']} | {r['total']} | "
                         f"{100 * r['specific'] / n:.1f} | {100 * (r['specific'] + r['generic']) / n:.1f} |")
    # agreement on tokens both sources label
    import torch

    from atwu_plugin.tokens import KIND_SPECIFIC, KIND_TEMPLATE

    w = torch.cat([it["token_kind"] for it in forget.items])
    p = torch.cat([it[PROXY_KEY] for it in forget.items])
    both = (w >= 0) & (p >= 0)
    agree = int((w[both] == p[both]).sum())
    lines += ["", f"Both sources label {int(both.sum())} tokens; they agree on {agree} "
              f"({100 * agree / max(int(both.sum()), 1):.1f} %). Of the word-label fact tokens, the proxy calls "
              f"{int(((w == KIND_SPECIFIC) & (p == KIND_SPECIFIC)).sum())} specific and "
              f"{int(((w == KIND_SPECIFIC) & (p == KIND_TEMPLATE)).sum())} generic; of the word-label generic "
              f"tokens, it calls {int(((w == KIND_TEMPLATE) & (p == KIND_SPECIFIC)).sum())} specific.", ""]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", required=True, help="directory with TOFU's JSON files")
    ap.add_argument("--retain-splits", nargs="+", default=["retain90"], choices=sorted(SPLIT_OF_RETAIN))
    ap.add_argument("--zoo", default="default", choices=["default", "smoke"])
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--page", default=None, help="write the models + label-sources page here (one section per retain split)")
    args = ap.parse_args()
    spec = TofuZooSpec() if args.zoo == "default" else SMOKE_TOFU_SPEC
    t0 = time.time()
    zoo = build_tofu_zoo(args.data_dir, args.cache_dir, spec, args.retain_splits)
    print(f"zoo {zoo.root} ready in {time.time() - t0:.0f} s ({zoo.manifest['n_parameters'] / 1e6:.2f}M parameters, "
          f"vocab {zoo.manifest['vocab']}; base: {json.dumps(zoo.manifest['timings'])})")
    print("\n".join(quality_table(zoo)))
    if args.page:
        benches = [get_benchmark("tofu_tiny", data_dir=args.data_dir, zoo=args.zoo, cache_dir=args.cache_dir,
                                 forget_split=SPLIT_OF_RETAIN[r]).prepare(log=lambda *a: None)
                   for r in args.retain_splits]
        splits = "/".join(b.forget_split for b in benches)
        per_split = []
        for bench in benches:
            per_split += [f"## No unlearning on {bench.forget_split}: the target and the retain model under the "
                          "leaderboard's evaluator", "", *reference_rows(bench), "", label_page(bench, zoo)]
        text = "\n".join([
            f"# TOFU-tiny models and label sources ({splits})", "",
            "Produced by `scripts/tofu_tiny_zoo.py --page` (a step of `make results-tofu-tiny` and "
            "`make results-tofu-honest`).", "",
            "## Models", "",
            f"{zoo.manifest['n_parameters'] / 1e6:.2f}M-parameter Llama, vocab {zoo.manifest['vocab']}, cache entry "
            f"`{zoo.root.rsplit('/', 1)[-1]}`. Quality probes (greedy ROUGE-L recall, answer probability) on 100 "
            "evenly spaced questions each; `fit (s)` is wall time on the machine that built it.", "",
            *quality_table(zoo), "",
            *per_split,
        ])
        atomic_write_text(args.page, text + "\n")
        print(f"wrote {args.page}")


if __name__ == "__main__":
    main()
