"""scripts/results_doc.py: the page lists every benchmark's plots (one subdirectory each when a
leaderboard has several benchmarks) and keeps the single-benchmark names."""

import json
import runpy
import sys
from pathlib import Path

SCRIPT = Path(__file__).parents[1] / "scripts" / "results_doc.py"


def _output_dir(root: Path, benches) -> Path:
    out = root / "out"
    (out / "cells").mkdir(parents=True)
    runs = [{"method": "A", "seed": 0, "metrics": {}, "wall_s": 60.0}]
    (out / "results.json").write_text(json.dumps({"benchmarks": [{"benchmark": b, "runs": runs} for b in benches]}))
    (out / "leaderboard.md").write_text("# Leaderboard: x\n\n| method |\n|---|\n| A |\n")
    for b in benches:
        sub = out / b if len(benches) > 1 else out
        sub.mkdir(exist_ok=True)
        (sub / "tradeoff.png").write_bytes(b"png-" + b.encode())
        (sub / "matched.png").write_bytes(b"curves-" + b.encode())
    return out


def _run(monkeypatch, *args):
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), *map(str, args)])
    runpy.run_path(str(SCRIPT), run_name="__main__")


def test_plots_of_every_benchmark_are_copied_and_linked(tmp_path, monkeypatch):
    out = _output_dir(tmp_path, ["f10", "f05"])
    page = tmp_path / "docs" / "honest.md"
    _run(monkeypatch, out, page, "--command", "make x")
    text = page.read_text()
    for b in ("f05", "f10"):
        assert (page.parent / f"honest_{b}_tradeoff.png").read_bytes() == b"png-" + b.encode()
        assert (page.parent / f"honest_{b}_matched.png").read_bytes() == b"curves-" + b.encode()
        assert f"![forget quality vs model utility — {b}](honest_{b}_tradeoff.png)" in text
    assert "make x" in text and "2 runs, 2.0 min" in text


def test_single_benchmark_keeps_its_names(tmp_path, monkeypatch):
    out = _output_dir(tmp_path, ["only"])
    page = tmp_path / "one.md"
    _run(monkeypatch, out, page, "--command", "make y")
    assert (tmp_path / "one_tradeoff.png").exists() and (tmp_path / "one_matched.png").exists()
    assert "![forget quality vs model utility](one_tradeoff.png)" in page.read_text()


def test_started_at_puts_the_whole_commands_wall_clock_on_the_page(tmp_path, monkeypatch):
    import time

    out = _output_dir(tmp_path, ["only"])
    page = tmp_path / "timed.md"
    _run(monkeypatch, out, page, "--command", "make z", "--started-at", time.time() - 90 * 60)
    assert "Wall-clock time of the whole command, from its start to the end of its runs: **90.0 min**" in page.read_text()
    # --finished-at: a page rewritten later (e.g. with new notes) keeps the run's own time
    start = time.time() - 5 * 3600
    _run(monkeypatch, out, page, "--command", "make z", "--started-at", start, "--finished-at", start + 12 * 60)
    assert "to the end of its runs: **12.0 min**" in page.read_text()
    _run(monkeypatch, out, page, "--command", "make z")  # without it: no such line
    assert "Wall-clock" not in page.read_text()


def test_fraction_kept_tables_across_benchmarks(tmp_path, monkeypatch):
    out = _output_dir(tmp_path, ["t1", "t2"])
    doc = json.loads((out / "results.json").read_text())
    for b, keep in zip(doc["benchmarks"], (0.5, 0.9)):
        b["matched"] = {"x": "x", "levels": [0.5], "metrics": ["y"]}
        b["runs"][0]["trajectory"] = [{"step": 0, "x": 1.0, "y": 0.2}, {"step": 2, "x": 0.4, "y": 0.2 * keep}]
    (out / "results.json").write_text(json.dumps(doc))
    page = tmp_path / "across.md"
    _run(monkeypatch, out, page, "--command", "make t", "--fraction-kept", "y")
    text = page.read_text()
    assert "## Across targets" in text
    # at x = 0.5 (5/6 of the way to 0.4): y kept 1 - 5/6 * 0.5 = 0.583 and 1 - 5/6 * 0.1 = 0.917
    assert "| A | 0.583 | 0.917 | **0.750 [0.583, 0.917]** | 2/2 |" in text
    assert "at the end of the run" in text and "| A | 0.500 | 0.900 |" in text


def test_paired_section_names_the_strongest_baseline(tmp_path, monkeypatch):
    out = _output_dir(tmp_path, ["b"])
    doc = json.loads((out / "results.json").read_text())
    trainers = {"ATWU": "ATWU", "RF": "TW_RetainFrequency", "NPO": "TW_NPO"}
    doc["benchmarks"][0]["runs"] = [
        {"method": m, "seed": s, "config": {"method": {"trainer": t}}, "wall_s": 1.0,
         "metrics": {"span_auroc": {"ATWU": 0.90, "RF": 0.95, "NPO": None}[m] + (0.001 * s if m != "NPO" else 0)}}
        for m, t in trainers.items() for s in (0, 1, 2) if not (m == "NPO")]
    (out / "results.json").write_text(json.dumps(doc))
    page = tmp_path / "paired.md"
    _run(monkeypatch, out, page, "--command", "make p", "--paired", "span_auroc")
    text = page.read_text()
    assert "## ATWU vs the strongest label-free baseline" in text
    assert "| span_auroc ↑ | end of run | RF | 0.9510 | 0.9010 | -0.0500 [-0.0500, -0.0500] | t over seeds | yes |" in text


def test_versus_adds_its_table_and_keeps_the_paired_section_when_there_is_a_baseline(tmp_path, monkeypatch):
    out = _output_dir(tmp_path, ["b"])
    doc = json.loads((out / "results.json").read_text())
    means = {"ATWU": 0.90, "ATWU-x": 0.92, "RF": 0.95}
    trainers = {"ATWU": "ATWU", "ATWU-x": "ATWU", "RF": "TW_RetainFrequency"}
    doc["benchmarks"][0]["runs"] = [
        {"method": m, "seed": s, "config": {"method": {"trainer": trainers[m]}}, "wall_s": 1.0,
         "metrics": {"span_auroc": means[m] + 0.001 * s}} for m in means for s in (0, 1, 2)]
    (out / "results.json").write_text(json.dumps(doc))
    page = tmp_path / "versus.md"
    _run(monkeypatch, out, page, "--command", "make v", "--paired", "span_auroc", "--versus", "ATWU")
    text = page.read_text()
    assert "## ATWU vs the strongest label-free baseline" in text and "| span_auroc ↑ | end of run | RF |" in text
    assert "## Differences from ATWU" in text and "| ATWU-x | **+0.0200 [+0.0200, +0.0200]** |" in text
    # ATWU variants only (an ablation): no baseline, so only the differences
    doc["benchmarks"][0]["runs"] = [r for r in doc["benchmarks"][0]["runs"] if r["method"] != "RF"]
    (out / "results.json").write_text(json.dumps(doc))
    _run(monkeypatch, out, page, "--command", "make v", "--paired", "span_auroc", "--versus", "ATWU")
    text = page.read_text()
    assert "strongest label-free baseline" not in text and "## Differences from ATWU" in text


def test_status_goes_right_under_the_title(tmp_path, monkeypatch):
    out = _output_dir(tmp_path, ["b"])
    status = tmp_path / "status.md"
    status.write_text("> **Status: superseded by other.md.**\n")
    page = tmp_path / "p.md"
    _run(monkeypatch, out, page, "--command", "make p", "--title", "T", "--status", status)
    assert page.read_text().startswith("# T\n\n> **Status: superseded by other.md.**\n\nProduced by")


def test_prose_only_swaps_status_and_notes_and_keeps_the_generated_part(tmp_path, monkeypatch):
    out = _output_dir(tmp_path, ["only"])
    page, status, notes = tmp_path / "p.md", tmp_path / "status.md", tmp_path / "notes.md"
    status.write_text("> old status\n")
    notes.write_text("Old reading.\n")
    _run(monkeypatch, out, page, "--command", "make p", "--title", "P", "--status", status, "--notes", notes)
    full = page.read_text()
    status.write_text("> new status\n")
    notes.write_text("New reading.\n")
    _run(monkeypatch, tmp_path / "gone", page, "--command", "unused", "--status", status, "--notes", notes,
         "--prose-only")
    text = page.read_text()
    assert text == full.replace("> old status", "> new status").replace("Old reading.", "New reading.")
    # the same as a full regeneration from the output dir
    again = tmp_path / "again.md"
    _run(monkeypatch, out, again, "--command", "make p", "--title", "P", "--status", status, "--notes", notes)
    assert again.read_text().replace("again_", "p_") == text


def test_prose_only_refuses_a_page_it_did_not_write(tmp_path, monkeypatch):
    import pytest

    page = tmp_path / "hand.md"
    page.write_text("# hand written\n\nno generated part\n")
    with pytest.raises(SystemExit, match="not a page written by this script"):
        _run(monkeypatch, tmp_path, page, "--command", "x", "--notes", page, "--prose-only")
