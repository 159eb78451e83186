"""The cell runner behind ``atwu-leaderboard`` and ``atwu-demo``: hands one (benchmark, method,
seed) cell to its host (``atwu_plugin.hosts``) and returns the host's results.json run dict."""

from atwu_plugin.tasks import get_benchmark
from atwu_plugin.hosts.lite_cell import run_lite_cell


def default_run_cell(cell) -> dict:
    if cell.host != "lite":
        from atwu_plugin.hosts.openunlearning_cells import run_openunlearning_cell

        return run_openunlearning_cell(cell)
    options = dict(cell.benchmark_options)
    # ``benchmark: <registered name>`` lets one spec list a benchmark twice (e.g. two forget
    # splits) under two names
    bench = get_benchmark(options.pop("benchmark", cell.benchmark), **options)
    return run_lite_cell(
        bench, cell.trainer, cell.overrides, cell.seed, str(cell.artifact_dir),
        token_log_path=cell.token_weights_path, on_step=cell.on_step, log=lambda *a: None,
        trajectory_points=getattr(cell, "trajectory_points", 0),
        trajectory_forget_truth_ratio=getattr(cell, "trajectory_forget_truth_ratio", True),
    )
