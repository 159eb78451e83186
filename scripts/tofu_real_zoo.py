"""Build (or reuse) the TOFU-real models (a real pretrained LM fine-tuned on TOFU authors) and
report what they know; optionally write a page with the build time, each model's knowledge of
the forget / retain / holdout authors, their scores under the leaderboard's evaluator and the
class sizes of both label sources.

    python scripts/tofu_real_zoo.py --data-dir ../shared/data/tofu
    python scripts/tofu_real_zoo.py --data-dir ... --page docs/results/tofu_real_zoo.md

The models are cached under $ATWU_CACHE_DIR (atwu_plugin/zoo/tofu_real.py); a second run only
reads the cache (the page then reports the build time recorded when they were built).
"""

import argparse
import os
import sys
import time

from atwu_plugin.tasks import get_benchmark
from atwu_plugin.utils.atomic import atomic_write_text
from atwu_plugin.zoo.tofu_real import TOFU_REAL_ZOOS, build_tofu_real_zoo

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tofu_tiny_zoo import label_page, reference_rows  # noqa: E402  (the same tables as TOFU-tiny's page)

def quality_table(models) -> list:
    spec = models.manifest["spec"]
    rows = ["| model | trained on | fit (s) | forget ROUGE-L | forget prob | retain ROUGE-L | retain prob | holdout prob |",
            "|---" * 8 + "|"]
    entries = [("pretrained", "nothing (as shipped)", None, models.manifest["models"]["retain"]["base_quality"])]
    for name, m in models.manifest["models"].items():
        what = (f"{spec['forget_split']} + {spec['n_retain_authors']} retain authors" if name == "target"
                else f"{spec['n_retain_authors']} retain authors")
        entries.append((name, f"{what} ({m['n_qa']} QA, {m['n_tokens']} tokens)", m["fit_s"], m["quality"]))
    for name, what, fit_s, q in entries:
        cells = " | ".join(f"{q[k]:.3f}" for k in ("forget_rouge", "forget_prob", "retain_rouge", "retain_prob",
                                                   "holdout_prob"))
        rows.append(f"| {name} | {what} | {'-' if fit_s is None else fit_s} | {cells} |")
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", required=True, help="directory with TOFU's JSON files")
    ap.add_argument("--zoo", default="forget01", choices=sorted(TOFU_REAL_ZOOS))
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--page", default=None, help="write the models + label-sources page here")
    args = ap.parse_args()
    spec = TOFU_REAL_ZOOS[args.zoo]
    t0 = time.time()
    models = build_tofu_real_zoo(args.data_dir, spec, args.cache_dir)
    print(f"TOFU-real zoo {models.root} ready in {time.time() - t0:.0f} s")
    print("\n".join(quality_table(models)))
    if not args.page:
        return
    bench = get_benchmark("tofu_real", data_dir=args.data_dir, zoo=args.zoo, cache_dir=args.cache_dir,
                          n_forget_eval=20, n_retain_eval=20, n_holdout_eval=20, n_world_eval=10,
                          max_new_tokens=24)  # tofu_real.yaml's evaluation.prepare(log=lambda *a: None)
    m = models.manifest
    build = m["models"]
    built_s = max(build["target"]["fit_s"] + build["target"]["quality_s"],
                  build["retain"]["fit_s"] + build["retain"]["quality_s"])
    text = "\n".join([
        f"# TOFU-real models and label sources (zoo `{args.zoo}`)", "",
        "Produced by `scripts/tofu_real_zoo.py --page` (the first step of `make results-tofu-real`).", "",
        "## Models", "",
        f"**{spec.model}**: {m['source']}, **{m['quantisation']}**, {m['n_parameters'] / 1e6:.1f}M parameters, "
        f"vocab {m['vocab']}, chat template on. Fine-tuned: the top {spec.top_layers} of 30 decoder layers + "
        f"final norm ({build['target']['n_trained_parameters'] / 1e6:.1f}M parameters; the tied embedding/head "
        f"frozen), {spec.fit.epochs} epochs, lr {spec.fit.lr}, batch {spec.fit.batch_size}, AdamW, cosine decay. "
        f"Both fine-tunes ran side by side, one thread each, on a 2-core CPU: the zoo build took "
        f"**{built_s / 60:.1f} min** (fit + quality probes of the slower job; the GGUF conversion, "
        f"{m['convert_s']} s, is once per machine).", "",
        f"Quality probes: greedy ROUGE-L recall and answer probability on {spec.n_quality} evenly spaced questions "
        f"of the forget authors ({spec.forget_split}), of the {spec.n_retain_authors} retain authors (their "
        f"questions in `retain_perturbed`) and of the holdout authors (never trained on). TOFU-tiny's models, for "
        "comparison, are on [tofu_tiny_zoo.md](tofu_tiny_zoo.md) (its target: forget10 ROUGE-L and probability "
        "there).", "",
        *quality_table(models), "",
        f"## No unlearning on {bench.forget_split}: the target and the retain model under the leaderboard's "
        "evaluator", "", *reference_rows(bench), "",
        label_page(bench, bench.zoo),
    ])
    atomic_write_text(args.page, text + "\n")
    print(f"wrote {args.page}")


if __name__ == "__main__":
    main()
