"""Rank RWKU targets by how well a model knows them (teacher-forced answer probabilities of
their forget FB/QA probes) and flag those whose neighbour probes it knows too; write the ranking
as JSON and, optionally, a page. Definitions: ``atwu_plugin/evals/rwku_known.py``.

    python scripts/rwku_known_targets.py --data-dir ../shared/data/rwku --out rwku_known.json
    python scripts/rwku_known_targets.py --data-dir ... --targets 1-20 --page rwku_known.md
    python scripts/rwku_known_targets.py --data-dir ... --model-path DIR --template-args '{...}' --out x.json

``--model`` is a real zoo model (converted once into $ATWU_CACHE_DIR); ``--model-path`` any
local save_pretrained folder with its tokenizer (e.g. a tiny test model).
"""

import argparse
import json
import os
import shlex
import sys
import time

from atwu_plugin.data.rwku import open_rwku
from atwu_plugin.data.tofu_splits import evenly_spaced
from atwu_plugin.evals.rwku_known import (
    KIND_SOURCES,
    SCORED_KINDS,
    answer_probabilities,
    pick_targets,
    rank_targets,
    target_knowledge,
)
from atwu_plugin.utils.atomic import atomic_write_json, atomic_write_text

KIND_TITLES = {"forget_fb": "forget FB", "forget_qa": "forget QA", "neighbor_fb": "neighbour FB",
               "neighbor_qa": "neighbour QA"}


def probe_budget(text: str):
    if text == "all":
        return None
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'all', got {text!r}")
    return n


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", required=True, help="RWKU root (<root> or <root>/Target)")
    ap.add_argument("--model", default="smollm2-135m", help="real zoo model (atwu_plugin.zoo.real)")
    ap.add_argument("--model-path", default=None, help="a local model folder instead of --model")
    ap.add_argument("--template-args", default=None,
                    help="template_args as JSON (required with --model-path; default: the zoo model's)")
    ap.add_argument("--cache-dir", default=None, help="zoo cache (default: $ATWU_CACHE_DIR)")
    ap.add_argument("--targets", default="all", help="RWKU selection, e.g. '1-20' or '1, 24' (default: all)")
    ap.add_argument("--max-probes-per-kind", type=probe_budget, default=10,
                    help="per target and kind, at most this many probes, evenly spaced ('all': no cap)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--prompt-style", choices=("rwku", "plain"), default="rwku")
    ap.add_argument("--neighbor-threshold", type=float, default=None,
                    help="neighbour score at which neighbours count as known (default: the median)")
    ap.add_argument("--pick", type=int, default=3, help="how many targets with known neighbours to pick")
    ap.add_argument("--top", type=int, default=20, help="rows of the page's ranking table")
    ap.add_argument("--out", required=True, help="JSON output path")
    ap.add_argument("--page", default=None, help="markdown page path")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    if args.batch_size < 1 or args.pick < 1 or args.top < 1:
        ap.error("--batch-size, --pick and --top must be positive")
    if args.model_path and args.template_args is None:
        ap.error("--model-path needs --template-args (the zoo's template_args apply to zoo models only)")
    return args


def sample_probes(data, targets, max_per_kind):
    """Each target's probes of every scored kind, at most ``max_per_kind`` of each, evenly spaced."""
    probes = []
    for t in targets:
        for kind in SCORED_KINDS:
            split, level = KIND_SOURCES[kind]
            probes += evenly_spaced(data.probes(t, split, level), max_per_kind)
    return probes


def load_model(args, log):
    """``(model, tokenizer, template_args, description)``."""
    import torch

    from atwu_plugin.zoo.loading import load_causal_lm, load_tokenizer

    if args.model_path:
        path, template_args = args.model_path, {}
        about = {"name": os.path.basename(os.path.normpath(path)), "path": path,
                 "quantisation": "as saved in the folder"}
    else:
        from atwu_plugin.zoo.real import real_model

        entry = real_model(args.model, args.cache_dir, log=log)
        path, template_args = entry.path, entry.template_args
        about = {"name": entry.name, "path": entry.path, "source": entry.manifest.get("source"),
                 "quantisation": entry.manifest.get("quantisation"),
                 "n_parameters": entry.manifest.get("n_parameters")}
    if args.template_args is not None:
        template_args = json.loads(args.template_args)
    model = load_causal_lm(path, torch_dtype=torch.float32)
    return model, load_tokenizer(path), template_args, about


def fmt(x, digits=4):
    return "-" if x is None else f"{x:.{digits}f}"


def table(rows, start_rank=None):
    head = ["| rank | target | known | " + " | ".join(KIND_TITLES[k] for k in SCORED_KINDS)
            + " | neighbour | neighbours known | probes (F/N) |", "|---:|---|" + "---:|" * 6 + "---|---:|"]
    for r in rows:
        n_forget = r["n"]["forget_fb"] + r["n"]["forget_qa"]
        n_neighbor = r["n"]["neighbor_fb"] + r["n"]["neighbor_qa"]
        flag = {True: "yes", False: "no", None: "-"}[r["neighbor_known"]]
        head.append(f"| {r['rank']} | {r['index']} {r['name']} | **{fmt(r['known'])}** | "
                    + " | ".join(fmt(r["prob"][k]) for k in SCORED_KINDS)
                    + f" | {fmt(r['neighbor'])} | {flag} | {n_forget}/{n_neighbor} |")
    return head


def page(result, top):
    s, m = result["settings"], result["model"]
    counts = ", ".join(f"{KIND_TITLES[k]} {n}" for k, n in result["n_probes"].items())
    picked = result["pick"]
    pick_text = (f"The {s['pick']} highest-ranked targets whose neighbours are known too"
                 + ("." if len(picked) >= s["pick"] else f": only {len(picked)} qualify."))
    model_line = f"**{m['name']}**" + (f", {m['source']}" if m.get("source") else "") + \
        f", weights **{m['quantisation']}**" + \
        (f", {m['n_parameters'] / 1e6:.1f}M parameters" if m.get("n_parameters") else "")
    return "\n".join([
        f"# RWKU: which targets {m['name']} knows", "",
        "Issue 21, part 1. Which of RWKU's targets the model already knows, from the probability it gives "
        "the gold answers of the probes (teacher-forced, no generation). Definitions: "
        "`atwu_plugin/evals/rwku_known.py`.", "",
        f"- Model: {model_line}; prompts in `{s['prompt_style']}` style with the model's template "
        "(`RWKUEvaluator`'s prompts).",
        f"- Command: `{result['command']}`",
        f"- Wall time: **{result['wall_s']:.1f} s** (data + model load {result['load_s']:.1f} s, scoring "
        f"{result['score_s']:.1f} s), batch size {s['batch_size']}, torch threads {s['torch_threads']}.",
        f"- Probes: {sum(result['n_probes'].values())} scored over {len(result['targets'])} targets "
        f"({counts}); "
        f"at most {s['max_probes_per_kind'] or 'all'} per target and kind, evenly spaced.", "",
        "A probe's probability is `exp(-mean NLL)` of its answer tokens after RWKU's prompt (the geometric "
        "mean of their probabilities). Per target and kind, the mean over its probes. **known** = mean of "
        "forget FB and forget QA; **neighbour** = mean of neighbour FB and QA; neighbours count as known "
        "when the neighbour score "
        f"is at least **{fmt(result['neighbor_threshold'], 4)}** ({s['threshold_rule']}).", "",
        "## Pick", "", pick_text, "",
        *(table(picked) if picked else ["(none)"]), "",
        f"## Ranking (top {min(top, len(result['targets']))} of {len(result['targets'])})", "",
        *table(result["targets"][:top]), "",
        "The full ranking and every probe's probability are in the JSON output.",
    ])


def command_line(argv) -> str:
    """The command as typed from the current directory, with the thread setting it ran under."""
    def short(path):
        rel = os.path.relpath(path)
        return path if rel.startswith("..") else rel

    env = [f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}"] if "OMP_NUM_THREADS" in os.environ else []
    return " ".join(env + [shlex.join([short(sys.executable), short(os.path.abspath(__file__)), *argv])])


def run(args, argv):
    import torch

    t0 = time.perf_counter()
    log = (lambda msg: None) if args.no_progress else (lambda msg: print(msg, file=sys.stderr))
    data = open_rwku(args.data_dir)  # bad folders and unknown targets fail before the model loads
    targets = data.targets() if args.targets.strip() == "all" else data.select(args.targets)
    if not targets:
        raise ValueError(f"--targets {args.targets!r} selects no RWKU target")
    probes = sample_probes(data, targets, args.max_probes_per_kind)
    model, tokenizer, template_args, about = load_model(args, log)
    t1 = time.perf_counter()
    probs = answer_probabilities(model, tokenizer, template_args, probes, batch_size=args.batch_size,
                                 prompt_style=args.prompt_style, progress=not args.no_progress)
    t2 = time.perf_counter()
    ranked, threshold = rank_targets(target_knowledge(probes, probs), args.neighbor_threshold)
    rows = [{"rank": i + 1, **r.as_dict()} for i, r in enumerate(ranked)]
    row_of = {r["index"]: r for r in rows}
    pick = [row_of[t.index] for t in pick_targets(ranked, args.pick)]
    return {
        "model": about,
        "command": command_line(argv),
        "settings": {"data_dir": args.data_dir, "source": data.source, "targets": args.targets,
                     "max_probes_per_kind": args.max_probes_per_kind, "batch_size": args.batch_size,
                     "prompt_style": args.prompt_style, "template_args": template_args, "pick": args.pick,
                     "threshold_rule": "given" if args.neighbor_threshold is not None else
                     "median neighbour score of the ranked targets",
                     "torch_threads": torch.get_num_threads()},
        "wall_s": round(time.perf_counter() - t0, 2),
        "load_s": round(t1 - t0, 2),
        "score_s": round(t2 - t1, 2),
        "n_probes": {k: sum(r["n"][k] for r in rows) for k in SCORED_KINDS},
        "neighbor_threshold": threshold,
        "pick": pick,
        "targets": rows,
        "probes": [{"target": p.target_index, "split": p.split, "level": p.level, "query": p.query,
                    "answer": p.answer, "prob": float(x)} for p, x in zip(probes, probs)],
    }


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    try:
        result = run(args, argv)
    except (ValueError, OSError, ImportError) as err:
        print(f"rwku_known_targets: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    atomic_write_json(args.out, result)
    print(f"wrote {args.out}")
    if args.page:
        atomic_write_text(args.page, page(result, args.top) + "\n")
        print(f"wrote {args.page}")
    for r in result["pick"]:
        print(f"pick: {r['index']} {r['name']} (rank {r['rank']}, known {fmt(r['known'])}, "
              f"neighbour {fmt(r['neighbor'])})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
