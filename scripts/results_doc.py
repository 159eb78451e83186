"""Write docs/results/<name>.md from a finished leaderboard output directory.

    python scripts/results_doc.py OUTPUT_DIR docs/results/NAME.md --command "the command that made it"

The page holds the command, the environment, the leaderboard table (mean ± std over seeds,
ranks, Pareto marks), the matched-forgetting tables when the spec has ``matched``, and the
plots (trade-off, matched-forgetting curves), copied next to the page.
"""

import argparse
import json
import os
import platform
import time
import shutil
from pathlib import Path


def main():
    p = argparse.ArgumentParser()
    p.add_argument("output_dir")
    p.add_argument("page")
    p.add_argument("--command", required=True)
    p.add_argument("--title", default=None)
    p.add_argument("--notes", default=None, help="a hand-written Markdown file appended as 'Reading the table'")
    p.add_argument("--started-at", type=float, default=None,
                   help="Unix time the whole make target started (its wall-clock time goes on the page)")
    p.add_argument("--fraction-kept", action="append", default=[], metavar="METRIC",
                   help="(several benchmarks with matched:) a table of METRIC kept at each matched level, per "
                        "benchmark and averaged over them (repeatable)")
    p.add_argument("--paired", action="append", default=[], metavar="METRIC[@LEVEL]",
                   help="ATWU minus the strongest label-free baseline on METRIC, at matched LEVEL or (no @) at the "
                        "end of the run, with a 95 %% interval, per benchmark (repeatable)")
    p.add_argument("--versus", default=None, metavar="METHOD",
                   help="with --paired targets: also every other method minus METHOD (an ablation's default), per benchmark")
    p.add_argument("--status", default=None, metavar="FILE",
                   help="Markdown put right under the title: what the page is still good for (e.g. superseded by)")
    p.add_argument("--finished-at", type=float, default=None,
                   help="Unix time its runs finished (default: now); rewriting the page later keeps the same time")
    p.add_argument("--prose-only", action="store_true",
                   help="rewrite only the --status and --notes parts of the existing page, keeping its generated "
                        "part (for a machine that no longer has the output dir; OUTPUT_DIR is not read)")
    args = p.parse_args()
    out, page = Path(args.output_dir), Path(args.page)
    if args.prose_only:
        return rewrite_prose(page, args.status, args.notes)
    if not (out / "results.json").exists():
        p.error(f"{out / 'results.json'}: not found; run the leaderboard into {out} first (atwu-leaderboard SPEC --output-dir {out})")
    results = json.loads((out / "results.json").read_text())
    runs = results.get("runs") or [r for b in results.get("benchmarks", []) for r in b["runs"]]
    seeds = sorted({r["seed"] for r in runs})
    wall = sum(r.get("wall_s", 0.0) for r in runs)
    import torch
    import transformers

    lines = [
        f"# {args.title or page.stem}",
        "",
        *([Path(args.status).read_text().strip(), ""] if args.status else []),
        "Produced by (rerun to reproduce; same seed and config give the same numbers on CPU):",
        "",
        "```bash",
        args.command,
        "```",
        "",
        f"Seeds {seeds}; {len(runs)} runs, {wall / 60:.1f} min of unlearning+evaluation on "
        f"{platform.processor() or platform.machine()} (torch {torch.__version__}, transformers {transformers.__version__}).",
        "",
        *([f"Wall-clock time of the whole command, from its start to the end of its runs: "
           f"**{((args.finished_at or time.time()) - args.started_at) / 60:.1f} min** on {os.cpu_count()} CPU cores.", ""]
          if args.started_at else []),
        # the leaderboard's own links point into its output dir: keep only the tables
        "\n".join(line.replace("# Leaderboard", "## Leaderboard", 1) if line.startswith("# ") else line
                  for line in (out / "leaderboard.md").read_text().strip().splitlines()
                  if not line.startswith(("![", "- [token weights"))),
        "",
    ]
    page.parent.mkdir(parents=True, exist_ok=True)
    # one benchmark: the plots sit in the output dir; several: one subdirectory per benchmark
    # (plots left in the output dir by an earlier one-benchmark run of the same dir are stale)
    names = [b["benchmark"] for b in results.get("benchmarks", [])]
    subs = [out / n for n in names] if len(names) > 1 else [out]
    for sub in subs:
        suffix = "" if sub == out else "_" + sub.name
        label = "" if sub == out else f" — {sub.name}"
        for name, alt in (("tradeoff", "forget quality vs model utility"),
                          ("matched", "trade-off curves along training (matched forgetting)")):
            png = sub / f"{name}.png"
            if png.exists():
                dest = page.with_name(f"{page.stem}{suffix}_{name}.png")
                shutil.copyfile(png, dest)
                lines += [f"![{alt}{label}]({dest.name})", ""]
    if args.fraction_kept:
        from atwu_plugin.leaderboard.matched_across import render_fraction_kept_markdown

        benches = results.get("benchmarks") or [results]
        levels = [*(benches[0].get("matched") or {}).get("levels", []), None]  # None: the end of each run
        lines += ["## Across targets", "",
                  "Each run's value where its forgetting measure first reaches the level, divided by the same "
                  "run's step-0 value; per target the mean over seeds that got there; the mean over targets "
                  "with the smallest and largest target (bold: at a matched level, the best among methods that "
                  "reached every target; the end-of-run tables compare unequal amounts of forgetting).", ""]
        for metric in args.fraction_kept:
            lines.append(render_fraction_kept_markdown(benches, metric, levels))
    if args.paired:
        from atwu_plugin.leaderboard.paired import render_paired_markdown

        targets = [(m, float(lv)) if lv else (m, None) for m, _, lv in (t.partition("@") for t in args.paired)]
        resolved = out / "spec.resolved.json"  # the spec's metric directions (metrics the package does not know)
        directions = ({m["name"]: m["direction"] for m in json.loads(resolved.read_text()).get("metrics", [])}
                      if resolved.exists() else {})
        benches = results.get("benchmarks") or [results]
        paired = [text for text in (render_paired_markdown(b, targets, directions) for b in benches) if text]
        if paired:  # every page with ATWU and a label-free baseline
            lines += ["## ATWU vs the strongest label-free baseline", "", *paired]
        if args.versus:
            from atwu_plugin.leaderboard.paired import render_versus_markdown

            lines += [f"## Differences from {args.versus}", ""]
            for bench in benches:
                lines.append(render_versus_markdown(bench, args.versus, targets, directions))
    if args.notes:
        lines += ["## Reading the table", "", Path(args.notes).read_text().strip(), ""]
    page.write_text("\n".join(lines))
    print(f"wrote {page}")


def rewrite_prose(page: Path, status: str | None, notes: str | None) -> None:
    """Swap the hand-written parts of a generated page (status under the title, notes at the end)."""
    if not page.exists():
        raise SystemExit(f"{page}: not found; --prose-only rewrites an existing page")
    text = page.read_text()
    head, sep, rest = text.partition("\nProduced by (")
    tail_marker = "\n## Reading the table\n"
    if not sep or (notes and tail_marker not in rest):
        raise SystemExit(f"{page}: not a page written by this script (no 'Produced by' line or no "
                         "'## Reading the table' section); rerun it from its output dir instead")
    title = head.splitlines()[0]
    body = rest.split(tail_marker)[0].rstrip("\n") if notes else rest.rstrip("\n")
    lines = [title, "", *([Path(status).read_text().strip(), ""] if status else []), "Produced by (" + body, ""]
    if notes:
        lines += ["## Reading the table", "", Path(notes).read_text().strip(), ""]
    page.write_text("\n".join(lines))
    print(f"rewrote the prose of {page}")


if __name__ == "__main__":
    main()
