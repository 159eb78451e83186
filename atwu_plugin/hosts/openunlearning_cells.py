"""Leaderboard cells on the OpenUnlearning host: OU's ``src/train.py``, then OU's ``src/eval.py``.

A ``host: openunlearning`` spec names, per benchmark (every key but ``name`` is an option)::

    benchmarks:
      - name: tofu_forget10
        experiment: unlearn/tofu/default          # OU experiment for train.py (required)
        eval_experiment: eval/tofu/default        # OU experiment for eval.py (required)
        summary: TOFU_SUMMARY.json                # the evaluator's summary file (required)
        train_overrides: [model=Llama-3.1-8B-Instruct, forget_split=forget10]   # Hydra, train.py
        eval_overrides: [model=Llama-3.1-8B-Instruct, forget_split=forget10]    # Hydra, eval.py
        accelerate: zero3                         # optional: atwu-accelerate-config name,
        num_processes: 8                          #   then train.py runs under accelerate launch

A method's ``overrides`` are Hydra overrides of train.py (``trainer.args.learning_rate: 1e-5``).
The cell's seed becomes ``trainer.args.seed`` (train) and ``seed`` (eval). The unlearned model
goes to ``<cell dir>/model``, OU's evaluation to ``<cell dir>/eval``; logs to ``train.log`` and
``eval.log`` there. OU's checkout comes from ``OPEN_UNLEARNING_ROOT``; this Python must have
OU's requirements and this package installed. Metrics: every number of the summary file, with
OU's TOFU names mapped onto the leaderboard's (``forget_Q_A_ROUGE`` -> ``forget_rouge``, ...).
"""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

from atwu_plugin.hosts.openunlearning import find_openunlearning_root

REQUIRED = ("experiment", "eval_experiment", "summary")
OPTIONS = REQUIRED + ("train_overrides", "eval_overrides", "accelerate", "num_processes")
# OU TOFU summary names -> leaderboard metric names (KNOWN_METRICS); other keys keep OU's name
OU_METRIC_NAMES = {
    "forget_Q_A_ROUGE": "forget_rouge",
    "forget_Q_A_Prob": "forget_prob",
    "retain_Q_A_ROUGE": "retain_rouge",
}


def check_options(benchmark: str, options: dict) -> None:
    """Raise ``ValueError`` naming the benchmark and the field for a malformed OU benchmark."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ValueError(f"benchmark {benchmark!r} (host openunlearning): unknown options {unknown}; expected some of {list(OPTIONS)}")
    for key in REQUIRED:
        if not isinstance(options.get(key), str) or not options[key]:
            raise ValueError(f"benchmark {benchmark!r}: {key}: got {options.get(key)!r}; expected a non-empty string")
    for key in ("train_overrides", "eval_overrides"):
        value = options.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and "=" in v for v in value):
            raise ValueError(f"benchmark {benchmark!r}: {key}: got {value!r}; expected a list of KEY=VALUE strings")
    n = options.get("num_processes", 1)
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"benchmark {benchmark!r}: num_processes: got {n!r}; expected an integer >= 1")
    if "num_processes" in options and "accelerate" not in options:
        raise ValueError(f"benchmark {benchmark!r}: num_processes needs accelerate (e.g. accelerate: zero3)")
    if "accelerate" in options:
        from atwu_plugin.hosts.accelerate import config_names

        if options["accelerate"] not in config_names():
            raise ValueError(f"benchmark {benchmark!r}: accelerate: got {options['accelerate']!r}; expected one of {config_names()}")


def _hydra_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cell_commands(cell, root: Path, python: str = None) -> Dict[str, List[str]]:
    """``{"train": argv, "eval": argv}`` of a cell (run with ``cwd=root``)."""
    opts = dict(cell.benchmark_options)
    check_options(cell.benchmark, opts)
    python = python or sys.executable
    out = Path(cell.artifact_dir).resolve()
    task = f"{cell.benchmark}_{cell.method}_seed{cell.seed}"
    method = [f"{k}={_hydra_value(v)}" for k, v in cell.overrides.items()]
    launcher = [python]
    if "accelerate" in opts:
        from atwu_plugin.hosts.accelerate import write_config

        n = opts.get("num_processes", 1)
        cfg = write_config(opts["accelerate"], str(out / "accelerate.yaml"), num_processes=n)
        launcher = [python, "-m", "accelerate.commands.launch", "--config_file", cfg,
                    "--main_process_port", str(_free_port())]
    train = [*launcher, str(root / "src" / "train.py"), "--config-name=unlearn.yaml",
             f"experiment={opts['experiment']}", f"trainer={cell.trainer}", *opts.get("train_overrides", []),
             *method, f"trainer.args.seed={cell.seed}", f"task_name={task}", f"paths.output_dir={out / 'model'}"]
    evaluate = [python, str(root / "src" / "eval.py"), f"experiment={opts['eval_experiment']}",
                *opts.get("eval_overrides", []), f"model.model_args.pretrained_model_name_or_path={out / 'model'}",
                f"model.tokenizer_args.pretrained_model_name_or_path={out / 'model'}",
                f"seed={cell.seed}", f"task_name={task}_eval", f"paths.output_dir={out / 'eval'}"]
    return {"train": train, "eval": evaluate}


def _run_logged(argv, root: Path, log: Path, what: str) -> None:
    with open(log, "w") as f:
        proc = subprocess.run(argv, cwd=str(root), stdout=f, stderr=subprocess.STDOUT, env=dict(os.environ))
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"OpenUnlearning {what} failed (exit {proc.returncode}); log {log}:\n{tail}")


def summary_metrics(summary: dict) -> dict:
    """The numbers of an OU summary file under leaderboard names."""
    return {OU_METRIC_NAMES.get(k, k): v for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def run_openunlearning_cell(cell) -> dict:
    root = find_openunlearning_root()
    cmds = cell_commands(cell, root)
    out = Path(cell.artifact_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    _run_logged(cmds["train"], root, out / "train.log", "train.py")
    train_s = time.time() - t0
    _run_logged(cmds["eval"], root, out / "eval.log", "eval.py")
    summary_path = out / "eval" / cell.benchmark_options["summary"]
    if not summary_path.is_file():
        raise FileNotFoundError(f"{summary_path}: OU's eval.py wrote no summary file (benchmark option 'summary')")
    summary = json.loads(summary_path.read_text())
    metrics = {**summary_metrics(summary), "train_s": round(train_s, 2)}
    model = next((o.split("=", 1)[1] for o in cell.benchmark_options.get("train_overrides", []) if o.startswith("model=")), "")
    return {"metrics": metrics, "ou_metrics": summary, "model": model, "wall_s": round(time.time() - t0, 2)}
