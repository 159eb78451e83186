"""Run a leaderboard: benchmarks x methods x seeds cells, resumable, then results and reports.

Output layout (``spec.output_dir``)::

    cells/<benchmark>/<method>/seed<k>-<hash12>.json   one finished cell (written atomically, last)
    cells/<benchmark>/<method>/seed<k>-<hash12>/       the cell's artifact dir (given to run_cell;
                                                       removed if left empty), e.g.
                                                       token_weights.jsonl for the heatmap
    results.json                                       one benchmark: {"benchmark", "model", "runs"}
                                                       several: {"name", "benchmarks": [...]} and
    <benchmark>/results.json                           one file per benchmark
    leaderboard.md, leaderboard.csv, tradeoff.png, heatmap_<method>.html (see report.py)
    failures.json                                      only when cells failed in the last run

A cell is identified by the sha256 of the canonical JSON (sorted keys, no whitespace, UTF-8) of
its resolved config ``{"benchmark": {name, **options}, "method": {name, trainer, overrides},
"seed", "host"}``. A rerun reuses a cell file whose stored hash matches and runs the others, so
an interrupted leaderboard resumes where it stopped, and editing one method's overrides reruns
only that method (old cell files with other hashes stay on disk and are ignored).

``run_cell(cell: CellSpec) -> dict`` does the work (training + evaluation) and returns the run
dict, at least ``{"metrics": {...}}``; ``method``/``seed``/``config`` are filled in by the
runner, ``wall_s`` is measured when missing, a ``model`` key names the benchmark's model in
results.json when the benchmark options have none. It may call ``cell.on_step(done, total)``
to advance an inner progress bar. An exception in one cell is recorded and the others run
(unless ``fail_fast``); ``KeyboardInterrupt`` stops at once, leaving finished cells on disk.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional

from atwu_plugin.leaderboard.spec import LeaderboardSpec, to_jsonable
from atwu_plugin.utils.atomic import atomic_write_json
from atwu_plugin.utils.run_lock import output_dir_lock

__all__ = [
    "CellSpec",
    "CellFailure",
    "LeaderboardOutcome",
    "canonical_json",
    "config_hash",
    "expand_grid",
    "run_leaderboard",
    "collect_results",
    "TOKEN_WEIGHTS_FILE",
]

TOKEN_WEIGHTS_FILE = "token_weights.jsonl"
HASH_LEN = 12


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def config_hash(config: Mapping[str, Any]) -> str:
    """sha256 hex digest of the canonical JSON of ``config`` (key order does not matter)."""
    return hashlib.sha256(canonical_json(config).encode("utf-8")).hexdigest()


def _noop_step(done: int, total: Optional[int] = None, **info: Any) -> None:
    return None


@dataclass(frozen=True)
class CellSpec:
    """One (benchmark, method, seed) cell, everything a cell runner needs."""

    benchmark: str
    benchmark_options: Dict[str, Any]
    method: str
    trainer: str
    overrides: Dict[str, Any]
    seed: int
    host: str
    config: Dict[str, Any]  # the resolved config (what is hashed)
    hash: str
    path: Path  # the cell's result file
    on_step: Callable[..., None] = field(default=_noop_step, compare=False, repr=False)

    # What the run records is read from the hashed config, so it cannot disagree with the hash.
    @property
    def trajectory_points(self) -> int:
        """> 0: log a matched-forgetting trajectory of that many points (spec ``matched``)."""
        return self.config.get("trajectory_points", 0)

    @property
    def trajectory_forget_truth_ratio(self) -> bool:
        """False: the trajectory skips the forget truth ratio (no matched metric reads it)."""
        return self.config.get("trajectory_forget_truth_ratio", True)

    @property
    def key(self) -> str:
        return f"{self.benchmark}/{self.method}/seed{self.seed}"

    @property
    def artifact_dir(self) -> Path:
        """Per-cell folder for run_cell's files (logs, token weights, checkpoints)."""
        return self.path.with_suffix("")

    @property
    def token_weights_path(self) -> Path:
        """Where a token-weighting method writes per-token records for the heatmap (JSONL of
        ``{"sample", "tokens", "weights", "kinds"}``)."""
        return self.artifact_dir / TOKEN_WEIGHTS_FILE


def expand_grid(spec: LeaderboardSpec) -> List[CellSpec]:
    """Cells in a stable order: benchmarks, then methods, then seeds, as listed in the spec."""
    cells = []
    for b in spec.benchmarks:
        for m in spec.methods:
            for s in spec.seeds:
                config = {
                    "benchmark": {"name": b.name, **b.options},
                    "method": {"name": m.name, "trainer": m.trainer, "overrides": dict(m.overrides)},
                    "seed": s,
                    "host": spec.host,
                }
                if spec.matched is not None:  # a trajectory changes what the cell records
                    config["trajectory_points"] = spec.matched.points
                    if not spec.matched.needs_forget_truth_ratio:  # only when False: older cells keep their hash
                        config["trajectory_forget_truth_ratio"] = False
                config = json.loads(canonical_json(config))  # plain JSON types only (tuples -> lists)
                h = config_hash(config)
                path = Path(spec.output_dir) / "cells" / b.name / m.name / f"seed{s}-{h[:HASH_LEN]}.json"
                cells.append(CellSpec(b.name, dict(b.options), m.name, m.trainer, dict(m.overrides), s,
                                      spec.host, config, h, path))
    return cells


@dataclass
class CellFailure:
    key: str
    error: str  # "ExceptionType: message"
    traceback: str = ""

    def to_json(self) -> Dict[str, str]:
        return {"cell": self.key, "error": self.error, "traceback": self.traceback}


@dataclass
class LeaderboardOutcome:
    spec: LeaderboardSpec
    ran: List[str] = field(default_factory=list)
    cached: List[str] = field(default_factory=list)
    failures: List[CellFailure] = field(default_factory=list)
    not_run: List[str] = field(default_factory=list)  # no result: after a fail-fast stop or only_report
    not_run_reason: str = ""
    results_path: Optional[Path] = None
    reports: Dict[str, Path] = field(default_factory=dict)
    report_error: Optional[str] = None
    warnings: List[str] = field(default_factory=list)  # damaged/NaN cell files, runs dropped from results.json

    @property
    def ok(self) -> bool:
        return not self.failures and not self.not_run and self.report_error is None

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def summary(self) -> str:
        total = len(self.ran) + len(self.cached) + len(self.failures) + len(self.not_run)
        lines = [f"leaderboard {self.spec.name!r}: {total} cells: {len(self.ran)} run, "
                 f"{len(self.cached)} reused, {len(self.failures)} failed"
                 + (f", {len(self.not_run)} not run ({self.not_run_reason})" if self.not_run else "")]
        for w in self.warnings:
            lines.append(f"  WARNING {w}")
        for f in self.failures:
            lines.append(f"  FAILED {f.key}: {f.error}")
        if self.failures:
            lines.append(f"  tracebacks: {Path(self.spec.output_dir) / 'failures.json'}; "
                         "rerun to retry only the failed/missing cells")
        if self.report_error:
            lines.append(f"  reports not written: {self.report_error}")
        if self.results_path:
            lines.append(f"results: {self.results_path}")
        for name in ("leaderboard.md", "tradeoff.png"):
            if name in self.reports:
                lines.append(f"{name.split('.')[0]}: {self.reports[name]}")
        return "\n".join(lines)


_NONFINITE = object()  # stands for NaN/Infinity while a cell file is parsed


def _nonfinite_to_null(obj: Any, where: str, found: List[str]) -> Any:
    if obj is _NONFINITE:
        found.append(where)
        return None
    if isinstance(obj, dict):
        return {k: _nonfinite_to_null(v, f"{where}.{k}" if where else k, found) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_nonfinite_to_null(v, f"{where}[{i}]", found) for i, v in enumerate(obj)]
    return obj


def _read_cell(cell: CellSpec) -> "tuple[Optional[Dict[str, Any]], Optional[str]]":
    """``(record, problem)``: the stored result of ``cell`` if its file exists, parses and
    carries the same hash, and a one-line note naming the file when it is damaged (the cell
    then counts as not done and is run again) or held NaN/Infinity (not JSON: read as null,
    listed under ``nonfinite``)."""
    path = cell.path
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None, None
    except OSError as e:
        return None, f"{path}: cannot read cell file ({e.strerror or e}); the cell is run again"
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=lambda name: _NONFINITE)
    except UnicodeDecodeError as e:
        return None, f"{path}: damaged cell file (not UTF-8 at byte {e.start}); the cell is run again"
    except json.JSONDecodeError as e:
        cut = e.pos >= len(raw.rstrip()) or e.msg.startswith("Unterminated string")
        what = "truncated" if cut else "malformed JSON"
        return None, (f"{path}: damaged cell file ({what} at line {e.lineno}, column {e.colno}: {e.msg}); "
                      "the cell is run again")
    found: List[str] = []
    data = _nonfinite_to_null(data, "", found)
    if not isinstance(data, dict) or data.get("hash") != cell.hash or not isinstance(data.get("metrics"), dict):
        return None, None  # another configuration's file (or not a cell record): ignored, rerun
    if any(k not in data for k in RUN_KEYS):
        return None, f"{path}: incomplete cell record (missing {', '.join(k for k in RUN_KEYS if k not in data)}); " \
                     "the cell is run again"
    if found:
        data["nonfinite"] = sorted(set(data.get("nonfinite") or []) | set(found))
        return data, f"{path}: non-finite value(s) (NaN/Infinity) at {', '.join(found)}: read as null"
    return data, None


def _clean_metrics(metrics: Mapping[str, Any], cell: CellSpec) -> Dict[str, Any]:
    out = {}
    for k, v in metrics.items():
        if not isinstance(k, str):
            raise TypeError(f"run_cell for {cell.key}: metric name {k!r} is not a string")
        if v is None:
            out[k] = None
        elif isinstance(v, bool) or not isinstance(v, (int, float)):
            try:  # numpy / torch scalars
                v = float(v)
            except (TypeError, ValueError):
                raise TypeError(f"run_cell for {cell.key}: metric {k!r} = {v!r} is not a number") from None
            out[k] = v if math.isfinite(v) else None
        else:
            # NaN/inf are not JSON; they mean "no value" (e.g. AUROC with a single class)
            out[k] = v if math.isfinite(v) else None
    return out


def _make_record(cell: CellSpec, result: Any, wall_s: float) -> Dict[str, Any]:
    if not isinstance(result, Mapping) or not isinstance(result.get("metrics"), Mapping):
        raise TypeError(f"run_cell for {cell.key} returned {type(result).__name__}; expected a dict "
                        "with a 'metrics' mapping")
    extra = {k: v for k, v in result.items() if k not in ("method", "seed", "config", "metrics", "wall_s")}
    rec = {
        "method": cell.method,
        "seed": cell.seed,
        "config": cell.config,
        "metrics": _clean_metrics(result["metrics"], cell),
        "wall_s": float(result.get("wall_s", wall_s)),
        "benchmark": cell.benchmark,
        "hash": cell.hash,
    }
    for k, v in extra.items():
        rec.setdefault(k, v)
    return rec


RUN_KEYS = ("method", "seed", "config", "metrics", "wall_s")


def collect_results(spec: LeaderboardSpec, records: Mapping[str, Mapping[str, Any]],
                    cells: Optional[List[CellSpec]] = None) -> Dict[str, Any]:
    """results.json content from finished cell records (keyed by cell hash), in grid order."""
    cells = cells if cells is not None else expand_grid(spec)
    benches = []
    for b in spec.benchmarks:
        runs, model = [], b.options.get("model")
        for c in cells:
            if c.benchmark != b.name or c.hash not in records:
                continue
            rec = records[c.hash]
            run = {k: rec[k] for k in RUN_KEYS}
            if isinstance(rec.get("trajectory"), list):
                run["trajectory"] = rec["trajectory"]
            if isinstance(rec.get("bootstrap"), dict):
                run["bootstrap"] = rec["bootstrap"]
            if rec.get("nonfinite"):  # NaN/inf in a cell file, read as null
                run["nonfinite"] = rec["nonfinite"]
            runs.append(run)
            if model is None and isinstance(rec.get("model"), str):
                model = rec["model"]
        bench = {"benchmark": b.name, "model": model if isinstance(model, str) else "", "runs": runs}
        if spec.matched is not None:
            bench["matched"] = spec.matched.to_json()
        benches.append(bench)
    if len(benches) == 1:
        return benches[0]
    return {"name": spec.name, "benchmarks": benches}


class _Progress:
    """Outer bar over cells + inner bar over steps (rich); a no-op when disabled."""

    def __init__(self, enabled: bool, total: int):
        self.enabled = enabled
        self._p = None
        self._lines = False
        if enabled:
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)

            self._p = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                               MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                               console=Console(stderr=True))
            self._outer = self._p.add_task("cells", total=total)
            # no live bar in CI logs (not a terminal): one line per cell instead
            self._lines = not self._p.console.is_terminal
            self._total, self._done = total, 0
            self._inner = None

    def __enter__(self):
        if self._p:
            self._p.__enter__()
        return self

    def __exit__(self, *exc):
        if self._p:
            self._p.__exit__(*exc)

    def log(self, msg: str) -> None:
        if self._p:
            self._p.console.print(msg, markup=False, highlight=False)

    def start_cell(self, cell: CellSpec) -> Callable[..., None]:
        if not self._p:
            return _noop_step
        self._p.update(self._outer, description=f"cells · {cell.key}")
        p = self._p
        state: Dict[str, Any] = {"task": None}

        def on_step(done: int, total: Optional[int] = None, **info: Any) -> None:
            if state["task"] is None:
                state["task"] = p.add_task(f"  steps · {cell.key}", total=total)
            desc = f"  steps · {cell.key}"
            if info:
                desc += " · " + " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                         for k, v in info.items())
            p.update(state["task"], completed=done, total=total, description=desc)

        self._inner = state
        return on_step

    def running(self, keys: List[str]) -> None:
        """Parallel mode: name the cells in flight (no per-step bars across processes)."""
        if self._p:
            self._p.update(self._outer, description="cells · running " + ", ".join(keys))

    def end_cell(self, cell: Optional[CellSpec] = None, status: str = "") -> None:
        if not self._p:
            return
        self._done += 1
        if self._lines and cell is not None:
            self.log(f"[{self._done}/{self._total}] {cell.key}: {status}")
        if self._inner and self._inner["task"] is not None:
            self._p.remove_task(self._inner["task"])
        self._inner = None
        self._p.advance(self._outer)


def run_leaderboard(spec: LeaderboardSpec, run_cell: Optional[Callable[[CellSpec], Mapping[str, Any]]],
                    progress: bool = True, fail_fast: bool = False, only_report: bool = False,
                    reports: bool = True, jobs: int = 1) -> LeaderboardOutcome:
    """Run the missing cells of ``spec`` with ``run_cell``, write results.json and the reports.

    ``only_report``: run nothing (``run_cell`` may be None); missing cells are listed as
    not run. ``jobs`` > 1 runs that many cells at once in spawned worker processes, each
    single-threaded (``run_cell`` must then be picklable: a module-level function). Returns a
    :class:`LeaderboardOutcome` (``exit_code`` 0 when every cell finished, ``summary()`` for
    the user). ``KeyboardInterrupt`` propagates; finished cells are kept."""
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs={jobs!r}; expected a positive integer")
    if jobs > 1 and run_cell is not None and not only_report:
        import pickle

        try:
            pickle.dumps(run_cell)
        except Exception as e:  # noqa: BLE001 - any pickling failure means the same thing
            raise ValueError(f"jobs={jobs} needs a picklable run_cell (a module-level function); "
                             f"{run_cell!r} is not: {e}") from None

    # One writer per output directory: a second run stops here, naming the holder's PID.
    with output_dir_lock(spec.output_dir, "atwu-leaderboard", what="leaderboard output_dir"):
        return _run_locked(spec, run_cell, progress, fail_fast, only_report, reports, jobs)


def _run_locked(spec, run_cell, progress, fail_fast, only_report, reports, jobs) -> LeaderboardOutcome:
    out_dir = Path(spec.output_dir)
    cells = expand_grid(spec)
    outcome = LeaderboardOutcome(spec)
    records: Dict[str, Dict[str, Any]] = {}
    todo: List[CellSpec] = []
    with _Progress(progress, len(cells)) as bar:
        for cell in cells:
            cached, problem = _read_cell(cell)
            if problem:
                outcome.warnings.append(problem)
                bar.log(f"WARNING {problem}")
            if cached is not None:
                records[cell.hash] = cached
                outcome.cached.append(cell.key)
                bar.start_cell(cell)
                bar.end_cell(cell, "reused")
            elif only_report or run_cell is None:
                outcome.not_run.append(cell.key)
                outcome.not_run_reason = "report only"
                bar.start_cell(cell)
                bar.end_cell(cell, "not run")
            else:
                todo.append(cell)

        def finish(cell: CellSpec, result: Any, error: Optional[BaseException], tb: str, wall_s: float) -> bool:
            """Record one cell's outcome; True when the grid must stop (fail-fast)."""
            status, stop = "", False
            try:
                if error is None:
                    rec = _make_record(cell, result, wall_s)
                    atomic_write_json(cell.path, rec)
            except Exception as e:  # noqa: BLE001 - a malformed result is this cell's failure
                error, tb = e, traceback.format_exc()
            if error is not None:
                fail = CellFailure(cell.key, f"{type(error).__name__}: {error}".splitlines()[0], tb)
                outcome.failures.append(fail)
                status = f"FAILED: {fail.error}"
                if not bar._lines:
                    bar.log(f"FAILED {cell.key}: {fail.error}")
                stop = fail_fast
            else:
                records[cell.hash] = rec
                outcome.ran.append(cell.key)
                status = f"done in {wall_s:.1f}s"
            with contextlib.suppress(OSError):
                cell.artifact_dir.rmdir()  # only succeeds when run_cell left it empty
            bar.end_cell(cell, status)
            return stop

        if jobs == 1:
            for i, cell in enumerate(todo):
                cell = replace(cell, on_step=bar.start_cell(cell))
                cell.artifact_dir.mkdir(parents=True, exist_ok=True)
                t0 = time.perf_counter()
                try:
                    result, error, tb = run_cell(cell), None, ""
                except Exception as e:  # noqa: BLE001 - one bad cell must not lose the others
                    result, error, tb = None, e, traceback.format_exc()
                if finish(cell, result, error, tb, time.perf_counter() - t0):
                    _mark_not_run(outcome, todo[i + 1:], bar)
                    break
        elif todo:
            _run_parallel(todo, run_cell, jobs, bar, finish, outcome)

    results = collect_results(spec, records, cells)
    out_dir.mkdir(parents=True, exist_ok=True)
    dropped = _runs_dropped(out_dir / "results.json", cells, records)
    if dropped:  # results.json never loses a run silently
        outcome.warnings.append(
            f"{out_dir / 'results.json'}: {len(dropped)} run(s) of the previous file have no readable cell file "
            f"now and are left out ({', '.join(dropped[:5])}{', ...' if len(dropped) > 5 else ''}); "
            "rerun without --only-report to recompute them")
    outcome.results_path = atomic_write_json(out_dir / "results.json", results)
    if "benchmarks" in results:
        for b in results["benchmarks"]:
            atomic_write_json(out_dir / b["benchmark"] / "results.json", b)
    atomic_write_json(out_dir / "spec.resolved.json", to_jsonable(spec))

    failures_path = out_dir / "failures.json"
    if only_report:
        pass  # nothing ran: keep the tracebacks of the last real run
    elif outcome.failures or outcome.not_run:
        atomic_write_json(failures_path, {"failed": [f.to_json() for f in outcome.failures],
                                          "not_run": outcome.not_run})
    elif failures_path.exists():
        failures_path.unlink()

    if reports:
        outcome.reports = _write_reports(spec, results, cells, records, outcome)
    return outcome


def _runs_dropped(results_path: Path, cells: List[CellSpec], records: Mapping[str, Any]) -> List[str]:
    """Keys of grid cells that the existing results.json holds but ``records`` lacks."""
    try:
        old = json.loads(results_path.read_text(encoding="utf-8"), parse_constant=lambda name: None)
    except (OSError, ValueError):
        return []
    benches = old.get("benchmarks", [old]) if isinstance(old, dict) else []
    had = set()
    for b in benches:
        for run in (b.get("runs") or []) if isinstance(b, dict) else []:
            try:
                had.add(config_hash(run["config"]))
            except (KeyError, TypeError, ValueError):
                continue
    return [c.key for c in cells if c.hash in had and c.hash not in records]


def _mark_not_run(outcome: "LeaderboardOutcome", cells: List[CellSpec], bar: "_Progress") -> None:
    for cell in cells:
        outcome.not_run.append(cell.key)
        outcome.not_run_reason = "fail-fast"
        bar.start_cell(cell)
        bar.end_cell(cell, "not run")


def _worker_init() -> None:
    # Several cells share the cores: one thread each (tiny models do not scale across threads).
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"


def _run_in_worker(run_cell: Callable, cell: CellSpec):
    t0 = time.perf_counter()
    try:
        return run_cell(cell), None, "", time.perf_counter() - t0
    except Exception as e:  # noqa: BLE001 - reported by the parent, like a serial failure
        tb = traceback.format_exc()
        try:
            import pickle

            pickle.dumps(e)
        except Exception:  # noqa: BLE001 - an unpicklable exception: send its text
            e = RuntimeError(f"{type(e).__name__}: {e}")
        return None, e, tb, time.perf_counter() - t0


class WorkerDied(RuntimeError):
    """The worker process running a cell died (killed, out of memory, crashed)."""


def _describe_exit(code: Optional[int]) -> str:
    if code is None:
        return "exit status unknown"
    if code < 0:
        import signal

        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def _exit_code(proc, timeout: float = 5.0) -> Optional[int]:
    """The dead worker's exit code. The pool's manager thread may be reaping the same process
    at this moment; its blocking waitpid then wins and ours gets ECHILD, which multiprocessing
    reports as "still running" (None) until that thread stores the code. So wait for the code,
    not only for the process."""
    if proc is None:
        return None
    deadline = time.monotonic() + timeout
    proc.join(timeout=timeout)
    while proc.exitcode is None and time.monotonic() < deadline:
        time.sleep(0.01)
    return proc.exitcode


def _run_parallel(todo: List[CellSpec], run_cell: Callable, jobs: int, bar: "_Progress", finish, outcome) -> None:
    """``jobs`` worker slots, each a one-process pool reused from cell to cell. A worker that
    dies (SIGKILL, the OOM killer) breaks only its own slot's pool: exactly its cell fails
    (``WorkerDied``, recorded in failures.json), the slot gets a fresh process, the grid goes on."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    bar.log(f"running {len(todo)} cell(s), {jobs} at a time (one thread each)")
    ctx = multiprocessing.get_context("spawn")

    def new_pool():
        return ProcessPoolExecutor(max_workers=1, mp_context=ctx, initializer=_worker_init)

    pools = [new_pool() for _ in range(jobs)]
    futures: Dict[Any, "tuple[int, CellSpec, Any]"] = {}  # future -> (slot, cell, worker process)
    queue = list(todo)
    try:
        while queue or futures:
            busy = {slot for slot, _, _ in futures.values()}
            for slot in range(jobs):
                if not queue or slot in busy:
                    continue
                cell = queue.pop(0)
                cell.artifact_dir.mkdir(parents=True, exist_ok=True)
                fut = pools[slot].submit(_run_in_worker, run_cell, cell)
                procs = list((getattr(pools[slot], "_processes", None) or {}).values())
                futures[fut] = (slot, cell, procs[0] if procs else None)
            bar.running([c.key for _, c, _ in futures.values()])
            done, _ = wait(list(futures), return_when=FIRST_COMPLETED)
            for fut in done:
                slot, cell, proc = futures.pop(fut)
                try:
                    result, error, tb, wall_s = fut.result()
                except BrokenProcessPool:
                    how = _describe_exit(_exit_code(proc))
                    error = WorkerDied(f"the worker process running this cell died ({how}); "
                                       "rerun to retry the cell")
                    result, tb, wall_s = None, "", 0.0
                    pools[slot].shutdown(wait=False, cancel_futures=True)
                    pools[slot] = new_pool()
                except Exception as e:  # noqa: BLE001 - e.g. an unpicklable result
                    result, error, tb, wall_s = None, e, traceback.format_exc(), 0.0
                if finish(cell, result, error, tb, wall_s):
                    for f in futures:
                        f.cancel()
                    _mark_not_run(outcome, queue + [c for _, c, _ in futures.values()], bar)
                    queue, futures = [], {}
                    break
    except BaseException:  # KeyboardInterrupt: do not wait for cells in flight
        for pool in pools:
            for proc in list((getattr(pool, "_processes", None) or {}).values()):
                proc.terminate()
            pool.shutdown(wait=False, cancel_futures=True)
        raise
    for pool in pools:
        pool.shutdown(wait=True, cancel_futures=True)


def _write_reports(spec, results, cells, records, outcome) -> Dict[str, Path]:
    from atwu_plugin.leaderboard.report import write_reports

    # heatmap source per (benchmark, method): the lowest finished seed that wrote token weights
    token_weights: Dict[str, Dict[str, Path]] = {}
    for c in sorted(cells, key=lambda c: c.seed):
        if c.hash in records and c.token_weights_path.is_file():
            token_weights.setdefault(c.benchmark, {}).setdefault(c.method, c.token_weights_path)
    try:
        return write_reports(results, spec.output_dir, metrics=spec.metrics, token_weights=token_weights,
                             title=f"Leaderboard: {spec.name}")
    except Exception as e:  # noqa: BLE001 - results.json is written; say what went wrong
        outcome.report_error = f"{type(e).__name__}: {e}".splitlines()[0]
        return {}

