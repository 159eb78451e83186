"""Reliability, round two (issue 18): what a careless or hostile user still broke.

One test (or a few) per item of the issue, each failing on the code before the fix: broken
entry point, damaged safetensors, a missing model_path, the lite host's model save, Ctrl-C
and resume, whole-spec validation, a killed --jobs worker, NaN/truncated cell files,
atwu-export over user files, output-directory locks, output paths that are files, default
output directories, token-log reruns, ``seed=true``, model-cache leftovers, samples longer
than the model's positions. docs/reliability.md lists the messages.

The end-to-end rows (``atwu-unlearn`` then ``atwu-eval model_path=<saved model>``, Ctrl-C on
the command line) use the smoke zoo and are marked ``slow``.
"""

import configparser
import copy
import importlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from transformers import TrainerCallback

from atwu_plugin.cli import eval as eval_cli
from atwu_plugin.cli import unlearn as unlearn_cli
from atwu_plugin.hosts.lite import (StopOnInterrupt, TrainingInterrupted, build_trainer, check_max_positions,
                                    default_output_dir, load_trainer_config, parse_lite_overrides,
                                    resolve_resume_checkpoint, save_unlearned_model)
from atwu_plugin.leaderboard.runner import expand_grid, run_leaderboard
from atwu_plugin.leaderboard.spec import load_spec, parse_spec
from atwu_plugin.trainers.base import COMPLETE_MARKER
from atwu_plugin.utils.run_lock import LOCK_NAME, OutputDirLocked, lock_holder_pid, output_dir_lock
from atwu_plugin.zoo.loading import load_causal_lm
from atwu_plugin.zoo.tokenizer import TINY_TEMPLATE_ARGS

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


@pytest.fixture(autouse=True)
def _no_openunlearning(monkeypatch):
    monkeypatch.delenv("OPEN_UNLEARNING_ROOT", raising=False)


def run_cli(main, argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, [line for line in captured.err.splitlines() if line.strip()]


def one_error(err, prog, *fragments):
    assert len(err) == 1, err
    assert err[0].startswith(f"{prog}: error: "), err
    for fragment in fragments:
        assert fragment in err[0], (fragment, err[0])


def tiny_llama(path=None, vocab_size=32):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=vocab_size, hidden_size=16, intermediate_size=32,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                                         max_position_embeddings=64))
    if path is not None:
        model.save_pretrained(path)
    return model


# ---- 1. every console script resolves -----------------------------------------------------------
def test_every_console_script_in_setup_cfg_is_importable():
    """setup.cfg is read directly (entry points of this worktree are not in the shared venv)."""
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    scripts = [line.split("=", 1) for line in cfg["options.entry_points"]["console_scripts"].strip().splitlines()]
    assert len(scripts) >= 8
    for name, target in scripts:
        module, _, attr = target.strip().partition(":")
        fn = getattr(importlib.import_module(module), attr, None)
        assert callable(fn), f"{name.strip()} -> {target.strip()} is not callable"


def test_build_demo_help_and_file_as_cache_dir(tmp_path, capsys):
    from atwu_plugin.cli.build import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "atwu-build-demo" in capsys.readouterr().out
    a_file = tmp_path / "cache"
    a_file.write_text("x")
    code, err = run_cli(main, ["--smoke", "--cache-dir", str(a_file)], capsys)
    assert code == 1
    one_error(err, "atwu-build-demo", f"{a_file}: cache directory is a file; expected a directory")


# ---- 2. damaged safetensors are named -----------------------------------------------------------
@pytest.mark.parametrize("damage, detail", [
    ("empty", "(0 bytes, expected at least an 8-byte header)"),
    ("random", "(header of"),
    ("truncated", "(truncated: "),
])
def test_damaged_safetensors_named(tmp_path, capsys, damage, detail):
    model_dir = tmp_path / "model"
    tiny_llama(model_dir)
    weights = model_dir / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes({"empty": b"", "random": os.urandom(4096), "truncated": data[: len(data) // 2]}[damage])
    with pytest.raises(ValueError, match=re.escape(f"{weights}: damaged safetensors file {detail}")):
        load_causal_lm(str(model_dir))
    out = tmp_path / "out"
    for main, prog, extra in ((eval_cli.main, "atwu-eval", []), (unlearn_cli.main, "atwu-unlearn", ["trainer=TW_GA"])):
        code, err = run_cli(main, ["--lite", *extra, f"model_path={model_dir}", f"output_dir={out}"], capsys)
        assert code == 2
        one_error(err, prog, f"{weights}: damaged safetensors file {detail}", "re-save the model")
    assert not out.exists()


# ---- 3. model_path is honoured or refused --------------------------------------------------------
def test_unlearn_refuses_missing_model_path(tmp_path, capsys):
    out = tmp_path / "out"
    code, err = run_cli(unlearn_cli.main, ["--lite", "trainer=TW_NPO", "model_path=/does/not/exist",
                                           f"output_dir={out}"], capsys)
    assert code == 2
    one_error(err, "atwu-unlearn", "/does/not/exist: model directory not found")
    assert not out.exists()


# ---- 4. the unlearned model is saved atomically ----------------------------------------------------
def test_save_unlearned_model_is_atomic(tmp_path, micro):
    dest = tmp_path / "run" / "model"
    model = tiny_llama()
    save_unlearned_model(model, micro["tokenizer"], str(dest), {"trainer": "TW_GA"})
    names = set(os.listdir(dest))
    assert {"model.safetensors", "config.json", "tokenizer.json", "atwu_run.json"} <= names
    assert json.loads((dest / "atwu_run.json").read_text())["trainer"] == "TW_GA"
    before = (dest / "model.safetensors").read_bytes()

    class BrokenTokenizer:
        def save_pretrained(self, path):
            raise OSError("disk full")

    with torch.no_grad():
        model.lm_head.weight.add_(1.0)
    with pytest.raises(OSError, match="disk full"):
        save_unlearned_model(model, BrokenTokenizer(), str(dest), {"trainer": "TW_GA"})
    assert (dest / "model.safetensors").read_bytes() == before  # the previous save is intact
    assert sorted(p.name for p in dest.parent.iterdir()) == ["model"]  # no .model.tmp-* left
    assert torch.equal(load_causal_lm(str(dest)).lm_head.weight, tiny_llama().lm_head.weight)


# ---- 5. Ctrl-C saves a complete checkpoint, a rerun resumes from it --------------------------------
class _SigintAt(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step + 1 == self.step:
            os.kill(os.getpid(), signal.SIGINT)  # arrives mid-step, like a user's Ctrl-C


def _micro(micro, out, max_steps=4):
    torch.set_num_threads(1)
    cfg = load_trainer_config("TW_GA", {"args.max_steps": max_steps, "args.per_device_train_batch_size": 4,
                                        "args.logging_steps": 1})
    model = copy.deepcopy(micro["model"])
    return build_trainer(cfg, model, micro["tokenizer"], micro["forget"], micro["retain"], str(out), 0,
                         TINY_TEMPLATE_ARGS)


def test_sigint_saves_checkpoint_and_resume_matches_uninterrupted(micro, tmp_path):
    reference = _micro(micro, tmp_path / "ref")
    reference.train()

    out = tmp_path / "run"
    trainer = _micro(micro, out)
    stopper = StopOnInterrupt()
    trainer.add_callback(stopper)
    trainer.add_callback(_SigintAt(2))
    # what was there before (Python's default handler, or SIG_IGN in a job started in the
    # background by a shell without job control, as `cmd &` in a script is)
    before = signal.getsignal(signal.SIGINT)
    with stopper.sigint(), pytest.raises(TrainingInterrupted) as stop:
        assert signal.getsignal(signal.SIGINT) is not before  # the stopper's handler is installed
        trainer.train()
    assert (stop.value.step, stop.value.max_steps) == (2, 4)
    assert stop.value.checkpoint == str(out / "checkpoint-2")
    assert (out / "checkpoint-2" / COMPLETE_MARKER).exists()
    assert signal.getsignal(signal.SIGINT) is before  # handler restored

    ckpt = resolve_resume_checkpoint(None, str(out))  # what a rerun picks up
    assert ckpt == str(out / "checkpoint-2")
    resumed = _micro(micro, out)
    resumed.train(resume_from_checkpoint=ckpt)
    for (name, a), b in zip(reference.model.named_parameters(), resumed.model.parameters()):
        assert torch.allclose(a, b, atol=1e-6), name


def test_resume_from_checkpoint_checked(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match=re.escape(f"args.resume_from_checkpoint={tmp_path / 'nope'}: "
                                                          "checkpoint folder not found")):
        resolve_resume_checkpoint(str(tmp_path / "nope"), str(tmp_path))
    partial = tmp_path / "checkpoint-3"
    partial.mkdir()
    (partial / "trainer_state.json").write_text("{}")
    with pytest.raises(ValueError, match="incomplete checkpoint"):
        resolve_resume_checkpoint(str(partial), str(tmp_path))
    with pytest.raises(ValueError, match="no complete checkpoint-N folder"):
        resolve_resume_checkpoint(True, str(tmp_path))
    out = tmp_path / "out"
    code, err = run_cli(unlearn_cli.main, ["--lite", "trainer=TW_GA", f"output_dir={out}",
                                           f"trainer.args.resume_from_checkpoint={tmp_path / 'nope'}"], capsys)
    assert code == 2
    one_error(err, "atwu-unlearn", "checkpoint folder not found")
    assert not out.exists()


# ---- 6. a whole leaderboard spec is checked before any model is built ------------------------------
def test_leaderboard_spec_checked_before_building(tmp_path, capsys, monkeypatch):
    from atwu_plugin.cli.leaderboard import main

    cache = tmp_path / "cache"
    monkeypatch.setenv("ATWU_CACHE_DIR", str(cache))
    spec = tmp_path / "lb.yaml"
    spec.write_text(
        "name: x\noutput_dir: out\nseeds: [0]\n"
        "benchmarks:\n  - {name: embedded, zoo: smoke}\n  - {name: emb2, benchmark: embedded, forget: x}\n"
        "  - {name: nope}\n"
        "methods:\n  - {name: A, trainer: TW_NPOO}\n"
        "  - {name: B, trainer: TW_NPO, overrides: {trainer.args.learning_rat: 1.0e-4}}\n"
        "  - {name: C, trainer: TW_GA, overrides: {trainer.method_args.weighter: nope}}\n")
    t0 = time.time()
    code, err = run_cli(main, [str(spec), "--no-progress"], capsys)
    assert code == 2
    assert time.time() - t0 < 30  # no model is built (that takes minutes)
    assert all(line.startswith(f"atwu-leaderboard: error: {spec}: ") for line in err), err
    text = "\n".join(err)
    assert "benchmarks[1] (emb2): benchmark embedded: unknown option(s) benchmark.forget" in text
    assert "benchmarks[2] (nope): unknown benchmark 'nope'" in text
    assert "methods[0] (A): unknown trainer config 'TW_NPOO'" in text
    assert "methods[1] (B): args: unknown key(s) ['learning_rat']" in text
    assert "methods[2] (C): unknown token weighter 'nope'" in text
    assert len(err) == 5
    assert not cache.exists() and not (tmp_path / "out").exists()


def test_unknown_metric_suggests_the_known_one(tmp_path):
    from atwu_plugin.leaderboard.spec import SpecError

    with pytest.raises(SpecError, match=r"'forget_qualty' is not a known metric; did you mean 'forget_quality'\?"):
        parse_spec({"name": "x", "output_dir": str(tmp_path), "benchmarks": ["b"], "seeds": [0],
                    "methods": [{"name": "A", "trainer": "TW_GA"}], "metrics": ["forget_qualty"]})


# ---- 7, 8, 11: leaderboard runner -------------------------------------------------------------------
def _spec(out, methods=("A", "B", "C"), seeds=(0,)):
    return parse_spec({"name": "t", "output_dir": str(out), "benchmarks": ["b"], "seeds": list(seeds),
                       "methods": [{"name": m, "trainer": m} for m in methods]}, source="SPEC.yaml")


def quick_cell(cell):  # module level: picklable for --jobs 2
    return {"metrics": {"forget_quality": 0.5 + cell.seed, "model_utility": len(cell.method) / 10}}


def killed_cell(cell):
    if cell.method == "B":
        os.kill(os.getpid(), signal.SIGKILL)  # the OOM killer, or a user's kill -9
    return quick_cell(cell)


def test_killed_worker_fails_only_its_cell(tmp_path):
    spec = _spec(tmp_path / "lb", methods=("A", "B", "C", "D"))
    outcome = run_leaderboard(spec, killed_cell, progress=False, reports=False, jobs=2)
    assert sorted(outcome.ran) == ["b/A/seed0", "b/C/seed0", "b/D/seed0"]
    assert [f.key for f in outcome.failures] == ["b/B/seed0"]
    assert outcome.failures[0].error == ("WorkerDied: the worker process running this cell died (killed by SIGKILL); "
                                         "rerun to retry the cell")
    failures = json.loads((tmp_path / "lb" / "failures.json").read_text())
    assert [f["cell"] for f in failures["failed"]] == ["b/B/seed0"]
    assert len(json.loads((tmp_path / "lb" / "results.json").read_text())["runs"]) == 3
    assert outcome.exit_code == 1 and "FAILED b/B/seed0: WorkerDied" in outcome.summary()


def test_nan_cell_file_is_read_as_null_and_named(tmp_path):
    spec = _spec(tmp_path / "lb")
    run_leaderboard(spec, quick_cell, progress=False, reports=False)
    cell = expand_grid(spec)[1]
    cell.path.write_text(cell.path.read_text().replace('"forget_quality": 0.5', '"forget_quality": NaN'))
    outcome = run_leaderboard(spec, None, progress=False, only_report=True)
    assert outcome.exit_code == 0, outcome.summary()
    assert outcome.warnings == [f"{cell.path}: non-finite value(s) (NaN/Infinity) at metrics.forget_quality: "
                                "read as null"]
    results = json.loads((tmp_path / "lb" / "results.json").read_text())  # strict JSON again
    run = [r for r in results["runs"] if r["method"] == "B"][0]
    assert run["metrics"]["forget_quality"] is None and run["nonfinite"] == ["metrics.forget_quality"]


def test_truncated_cell_file_is_named_and_rerun(tmp_path):
    spec = _spec(tmp_path / "lb")
    run_leaderboard(spec, quick_cell, progress=False, reports=False)
    cell = expand_grid(spec)[2]
    cell.path.write_text(cell.path.read_text()[:40])
    outcome = run_leaderboard(spec, None, progress=False, only_report=True, reports=False)
    assert outcome.not_run == ["b/C/seed0"] and outcome.exit_code == 1
    assert outcome.warnings[0].startswith(f"{cell.path}: damaged cell file (truncated at line ")
    assert outcome.warnings[1].startswith(f"{tmp_path / 'lb' / 'results.json'}: 1 run(s) of the previous file "
                                          "have no readable cell file now and are left out (b/C/seed0)")
    again = run_leaderboard(spec, quick_cell, progress=False, reports=False)
    assert again.ran == ["b/C/seed0"] and len(again.cached) == 2 and again.exit_code == 0
    assert len(json.loads((tmp_path / "lb" / "results.json").read_text())["runs"]) == 3


HOLD_LOCK = ("import sys, time\nfrom atwu_plugin.utils.run_lock import output_dir_lock\n"
             "with output_dir_lock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(120)\n")


def test_output_dir_lock_names_holder_and_stale_lock_is_taken_over(tmp_path, capsys):
    from atwu_plugin.cli.leaderboard import main

    out = tmp_path / "lb"
    spec_file = tmp_path / "lb.yaml"
    spec_file.write_text("name: x\noutput_dir: lb\nbenchmarks: [b]\nseeds: [0]\nmethods: [{name: A, trainer: A}]\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    holder = subprocess.Popen([PY, "-c", HOLD_LOCK, str(out)], stdout=subprocess.PIPE, env=env, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(OutputDirLocked, match=f"PID {holder.pid} on "):
            run_leaderboard(load_spec(spec_file), quick_cell, progress=False)
        code, err = run_cli(main, [str(spec_file), "--only-report", "--no-progress"], capsys)
        assert code == 2
        one_error(err[1:], "atwu-leaderboard", f"{out}: leaderboard output_dir is in use by another run (PID {holder.pid} on ",
                  "wait for it to finish, or choose another output directory")
        assert not (out / "cells").exists()
    finally:
        holder.kill()
        holder.wait()
    assert lock_holder_pid(out) == holder.pid  # the dead holder's lock file is still there...
    outcome = run_leaderboard(load_spec(spec_file), quick_cell, progress=False, reports=False)
    assert outcome.ran == ["b/A/seed0"]  # ...and taken over
    assert lock_holder_pid(out) == os.getpid()


def test_lite_output_dir_locked(tmp_path, capsys):
    out = tmp_path / "out"
    with output_dir_lock(out):
        code, err = run_cli(unlearn_cli.main, ["--lite", "trainer=TW_GA", f"output_dir={out}"], capsys)
    assert code == 2
    one_error(err, "atwu-unlearn", f"{out}: output directory is in use by another run (PID {os.getpid()} on ")
    assert os.listdir(out) == [LOCK_NAME]


# ---- 10. atwu-export dir ------------------------------------------------------------------------------
def _qa(i):
    return {"question": f"Q{i}?", "answer": f"A{i}."}


def test_export_rerun_keeps_user_files(tmp_path, capsys):
    from atwu_plugin.cli.export import main

    src = tmp_path / "src"
    src.mkdir()
    (src / "forget10.json").write_text(json.dumps([_qa(i) for i in range(3)]))
    (src / "retain90.json").write_text(json.dumps([_qa(i) for i in range(5)]))
    out = tmp_path / "out"
    assert main(["dir", "--src", str(src), "--out", str(out)]) == 0
    (out / "NOTES.md").write_text("my notes")
    (out / "extra.jsonl").write_text('{"question": "mine", "answer": "mine"}\n')
    assert main(["dir", "--src", str(src), "--out", str(out), "--names", "forget10"]) == 0
    assert (out / "NOTES.md").read_text() == "my notes" and (out / "extra.jsonl").exists()
    assert not (out / "retain90.jsonl").exists()  # our own file of the previous export
    assert "path: forget10.jsonl" in (out / "README.md").read_text()
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]
    capsys.readouterr()
    (src / "extra.json").write_text(json.dumps([_qa(0)]))  # would overwrite the user's extra.jsonl
    code, err = run_cli(main, ["dir", "--src", str(src), "--out", str(out)], capsys)
    assert code == 2
    one_error(err, "atwu-export", f"{out}: extra.jsonl not written by atwu-export would be overwritten")
    assert (out / "extra.jsonl").read_text() == '{"question": "mine", "answer": "mine"}\n'


@pytest.mark.parametrize("name, content, message", [
    ("forget10.jsonl", '{"question": "q", "answer": "a"}\n{"question": "q2"}\n',
     "forget10.jsonl: record 1 (line 2): missing field 'answer' (expected keys: question, answer)"),
    ("forget10.json", json.dumps([{"answer": "a"}]),
     "forget10.json: record 0: missing field 'question' (expected keys: question, answer)"),
    ("forget10.json", json.dumps({"rows": [_qa(0)]}),
     "forget10.json: a JSON object with keys ['rows']; expected a split: a JSON list of records, JSON Lines, "
     'or {"data": [...]}'),
    ("forget10.json", b'[{"question": "caf\xe9", "answer": "a"}]',
     "forget10.json: not UTF-8 text (invalid byte 0xe9 at line 1)"),
    ("forget10.json", "[]", "forget10.json: empty split (no records)"),
])
def test_export_bad_source_files_named(tmp_path, capsys, name, content, message):
    from atwu_plugin.cli.export import main

    src = tmp_path / "src"
    src.mkdir()
    (src / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    code, err = run_cli(main, ["dir", "--src", str(src), "--out", str(tmp_path / "out")], capsys)
    assert code == 2
    one_error(err, "atwu-export", f"{src}{os.sep}{message}")
    assert not (tmp_path / "out").exists()


def test_export_reads_data_wrapped_json(tmp_path):
    from atwu_plugin.data.export import read_split_dir

    (tmp_path / "forget10.json").write_text(json.dumps({"data": [_qa(0), _qa(1)]}))
    assert read_split_dir(tmp_path)["forget10"] == [_qa(0), _qa(1)]
    (tmp_path / "forget10.json").write_text(json.dumps({"data": [{"question": "q"}]}))
    with pytest.raises(ValueError, match=r"forget10.json: record 0: missing field 'answer'"):
        read_split_dir(tmp_path)


# ---- 12. output paths that are files, spec not UTF-8 ---------------------------------------------------
def test_output_dir_is_a_file(tmp_path, capsys):
    from atwu_plugin.cli.export import main as export_main
    from atwu_plugin.cli.leaderboard import main as lb_main

    a_file = tmp_path / "taken"
    a_file.write_text("x")
    spec_file = tmp_path / "lb.yaml"
    spec_file.write_text("name: x\noutput_dir: taken\nbenchmarks: [b]\nseeds: [0]\nmethods: [{name: A, trainer: A}]\n")
    code, err = run_cli(lb_main, [str(spec_file), "--only-report", "--no-progress"], capsys)
    assert code == 2
    one_error(err, "atwu-leaderboard", f"{a_file}: leaderboard output_dir is a file; expected a directory")
    code, err = run_cli(export_main, ["embedded", "--out", str(a_file), "--n-authors", "10", "--n-holdout", "1"], capsys)
    assert code == 2
    one_error(err, "atwu-export", f"{a_file}: --out is a file; expected a directory")
    code, err = run_cli(unlearn_cli.main, ["--lite", "trainer=TW_GA", f"output_dir={a_file / 'run'}"], capsys)
    assert code == 2
    one_error(err, "atwu-unlearn", f"{a_file / 'run'}: output directory is a file (its parent {a_file} is a file)")
    assert a_file.read_text() == "x"


def test_spec_not_utf8(tmp_path, capsys):
    from atwu_plugin.cli.leaderboard import main

    spec_file = tmp_path / "lb.yaml"
    spec_file.write_bytes(b"name: caf\xe9\noutput_dir: o\n")
    code, err = run_cli(main, [str(spec_file)], capsys)
    assert code == 2
    one_error(err, "atwu-leaderboard", f"{spec_file}: not UTF-8 text (invalid byte 0xe9 at line 1); "
              "expected a YAML leaderboard spec")


# ---- 13. default output directories of different runs differ ----------------------------------------------
def test_default_output_dir_depends_on_model_path():
    a = parse_lite_overrides(["model_path=/models/a"])
    b = parse_lite_overrides(["model_path=/models/b"])
    plain = parse_lite_overrides([])
    assert default_output_dir("atwu-eval", plain) == os.path.join("outputs", "atwu-eval", "eval-seed0")
    dirs = {default_output_dir("atwu-eval", c) for c in (a, b, plain)}
    assert len(dirs) == 3
    lr1 = parse_lite_overrides(["trainer=TW_GA", "trainer.args.learning_rate=1e-4"])
    lr2 = parse_lite_overrides(["trainer=TW_GA", "trainer.args.learning_rate=1e-3"])
    assert default_output_dir("atwu-unlearn", lr1) != default_output_dir("atwu-unlearn", lr2)
    resumed = parse_lite_overrides(["trainer=TW_GA", "trainer.args.learning_rate=1e-4",
                                    "trainer.args.resume_from_checkpoint=true"])
    assert default_output_dir("atwu-unlearn", resumed) == default_output_dir("atwu-unlearn", lr1)


# ---- 14. smaller ones --------------------------------------------------------------------------------------
def test_token_log_trimmed_on_rerun(tmp_path):
    from atwu_plugin.hosts.lite_cell import _trim_token_log

    log = tmp_path / "token_weights.jsonl"
    log.write_text("".join(json.dumps({"step": s, "weights": [1.0]}) + "\n" for s in (10, 20, 30)) + '{"step": 4')
    _trim_token_log(str(log), 20)  # resumed from checkpoint-20: keeps what it will not redo
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [10, 20]
    _trim_token_log(str(log), None)  # a fresh run starts empty
    assert not log.exists()


@pytest.mark.parametrize("value", ["true", "false", "1.5", "-1"])
def test_seed_must_be_an_integer(tmp_path, capsys, value):
    out = tmp_path / "out"
    code, err = run_cli(unlearn_cli.main, ["--lite", "trainer=TW_GA", f"seed={value}", f"output_dir={out}"], capsys)
    assert code == 2
    one_error(err, "atwu-unlearn", f"seed='{value}': expected a non-negative integer")
    assert not out.exists()


def test_interrupted_cache_build_leaves_no_tmp(tmp_path):
    from atwu_plugin.zoo.cache import cached_dir

    root = tmp_path / "entry"
    (tmp_path / "entry.tmp-999999").mkdir()  # left by a build killed with SIGKILL
    (tmp_path / "entry.tmp-999999" / "half.bin").write_bytes(b"x")

    def interrupted(tmp):
        (tmp / "part").write_text("x")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cached_dir(root, interrupted)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["entry.lock"]
    assert cached_dir(root, lambda tmp: {"ok": 1}) == {"ok": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["entry", "entry.lock"]


def test_sample_longer_than_model_positions(micro):
    from atwu_plugin.data.qa_dataset import QADataset

    long_answer = " ".join(["Oslo"] * 400)
    ds = QADataset([{"question": "Where?", "answer": "Paris."}, {"question": "Where?", "answer": long_answer}],
                   micro["tokenizer"], TINY_TEMPLATE_ARGS, max_length=1024, name="forget")
    n = len(ds[1]["input_ids"])
    assert n > 128
    with pytest.raises(ValueError, match=re.escape(
            f"forget dataset: sample 1 has {n} tokens (1 sample(s) longer than the model's 128 positions, "
            "config.max_position_embeddings=128); lower the benchmark's max_length option to 128 or less")):
        check_max_positions(micro["model"], {"forget": ds, "retain": micro["retain"]})
    check_max_positions(micro["model"], {"forget": micro["forget"], "retain": micro["retain"]})  # fits


# ---- end to end on the lite host (smoke zoo) -------------------------------------------------------------
SMOKE = ["--lite", "benchmark.zoo=smoke"]


@pytest.mark.slow
def test_unlearn_then_eval_the_saved_model(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    argv = [*SMOKE, "trainer=TW_GA", "trainer.args.num_train_epochs=4", f"output_dir={out}"]  # 12 steps
    assert unlearn_cli.main(argv) == 0
    captured = capsys.readouterr()
    saved = out / "model"
    assert f"atwu-unlearn: saved the unlearned model to {saved}" in captured.out
    assert {"model.safetensors", "config.json", "tokenizer.json", "atwu_run.json"} <= set(os.listdir(saved))
    run_cfg = json.loads((saved / "atwu_run.json").read_text())
    assert run_cfg["trainer"] == "TW_GA" and run_cfg["trainer_config"]["args"]["num_train_epochs"] == 4
    trained = json.loads((out / "results.json").read_text())
    assert trained["saved_model"] == str(saved)
    n_log = len((out / "token_weights.jsonl").read_text().splitlines())
    assert n_log > 0

    assert unlearn_cli.main(argv) == 0  # a rerun (no checkpoints: starts over) does not append
    assert len((out / "token_weights.jsonl").read_text().splitlines()) == n_log

    # the saved model evaluates to the numbers of the run that saved it; two evaluations
    # without output_dir (the saved model, the benchmark's own) do not share a directory
    assert eval_cli.main([*SMOKE, f"model_path={saved}"]) == 0
    assert eval_cli.main([*SMOKE]) == 0
    results = sorted((tmp_path / "outputs" / "atwu-eval").glob("*/results.json"))
    assert len(results) == 2
    by_model = {json.loads(p.read_text())["model"]: json.loads(p.read_text())["runs"][0]["metrics"] for p in results}
    evaluated = by_model[str(saved)]
    for key in ("forget_specific_prob", "kl_to_retain", "retain_rouge"):
        assert evaluated[key] == pytest.approx(trained["runs"][0]["metrics"][key], abs=1e-6), key
    assert len(set(json.dumps(m, sort_keys=True) for m in by_model.values())) == 2


@pytest.mark.slow
def test_cli_sigint_exits_130_and_rerun_resumes(tmp_path):
    out = tmp_path / "run"
    argv = [PY, "-m", "atwu_plugin.cli.unlearn", *SMOKE, "trainer=TW_NPO", "trainer.args.num_train_epochs=5",
            f"output_dir={out}"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    deadline = time.time() + 600
    while not (out / "token_weights.jsonl").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)  # the first token-weight record: training is under way (step 10 of 15)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 130, err
    last = err.strip().splitlines()[-1]
    match = re.fullmatch(rf"atwu-unlearn: interrupted at step (\d+) of 15; saved checkpoint "
                         rf"{re.escape(str(out))}/checkpoint-(\d+); rerun the same command to resume from it", last)
    assert match and match.group(1) == match.group(2), last
    assert "Traceback" not in err
    ckpt = out / f"checkpoint-{match.group(1)}"
    assert (ckpt / COMPLETE_MARKER).exists() and not (out / "model").exists()

    done = subprocess.run(argv, capture_output=True, env=env, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    assert json.loads((out / "model" / "atwu_run.json").read_text())["resumed_from"] == str(ckpt)


# ---- beyond the list: the same faults in other commands and files -----------------------------------------
def test_damaged_cache_manifest_named(tmp_path):
    from atwu_plugin.zoo.cache import cached_dir

    root = tmp_path / "entry"
    cached_dir(root, lambda tmp: {"ok": 1})
    (root / "manifest.json").write_text('{"ok": ')
    with pytest.raises(ValueError, match=re.escape(f"{root / 'manifest.json'}: damaged cache entry (JSONDecodeError: ")
                       + ".*" + re.escape(f"delete {root} to rebuild it")):
        cached_dir(root, lambda tmp: {"ok": 2})


def test_accelerate_config_output_is_a_directory(tmp_path, capsys):
    from atwu_plugin.cli.accelerate_config import main

    code, err = run_cli(main, ["zero2", "-o", str(tmp_path)], capsys)
    assert code == 2
    one_error(err, "atwu-accelerate-config", f"--output {tmp_path}: is a directory; expected the path of the YAML file")
    a_file = tmp_path / "f"
    a_file.write_text("x")
    code, err = run_cli(main, ["zero2", "-o", str(a_file / "acc.yaml")], capsys)
    assert code == 2 and len(err) == 1 and str(a_file) in err[0], err


def test_eval_of_a_run_dir_points_at_its_model(tmp_path, capsys):
    tiny_llama(tmp_path / "run" / "model")
    code, err = run_cli(eval_cli.main, ["--lite", f"model_path={tmp_path / 'run'}", f"output_dir={tmp_path / 'o'}"],
                        capsys)
    assert code == 2
    one_error(err, "atwu-eval", f"{tmp_path / 'run'}: no model weights found (expected *.safetensors); did you mean "
              f"{tmp_path / 'run' / 'model'} (the unlearned model of that run)?")


@pytest.mark.slow
def test_eval_max_length_beyond_model_positions(tmp_path, capsys):
    from atwu_plugin.tasks.embedded import EmbeddedBenchmark

    tok = EmbeddedBenchmark(zoo="smoke").tokenizer()
    model_dir = tmp_path / "short"
    tiny_llama(model_dir, vocab_size=len(tok))  # 64 positions; the benchmark's max_length is 128
    code, err = run_cli(eval_cli.main, [*SMOKE, f"model_path={model_dir}", f"output_dir={tmp_path / 'o'}"], capsys)
    assert code == 2
    one_error(err, "atwu-eval", f"benchmark.max_length=128 is more than the 64 positions of model {model_dir} "
              "(config.max_position_embeddings); pass benchmark.max_length=64 or less")


def test_exit_code_waits_for_the_code_another_thread_is_reaping():
    # The pool's manager thread reaps a dead worker with a blocking waitpid; a join in our thread
    # can return while the code is not yet stored (ECHILD reads as "still running"). The code
    # arrives a moment later and must be the one reported, not "exit status unknown".
    import threading

    from atwu_plugin.leaderboard.runner import _describe_exit, _exit_code

    class ReapedElsewhere:
        exitcode = None

        def join(self, timeout=None):
            pass

    proc = ReapedElsewhere()
    threading.Timer(0.2, lambda: setattr(proc, "exitcode", -9)).start()
    assert _describe_exit(_exit_code(proc)) == "killed by SIGKILL"
    assert _exit_code(None) is None
