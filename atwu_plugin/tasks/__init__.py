"""Tasks: the benchmarks the lite host can run, each data + models + evaluator behind one name
(as a task in lm-evaluation-harness). Performance scripts are elsewhere (top-level
``benchmarks/``).

A benchmark object exposes ``prepare()``, ``model_path``, ``retain_model_path``,
``aux_model_path``, ``template_args``, ``tokenizer()``, ``train_datasets(tokenizer)``,
``evaluator(tokenizer)`` and ``trainer_args`` (lite TrainingArguments defaults tuned to it).
"""

from atwu_plugin.registry import Registry

BENCHMARKS: Registry = Registry("benchmark")

# ``method_args.aux_model_path`` keywords the lite host resolves against the benchmark: its base
# model (never saw the benchmark's data; the default) or its retain model (trained like the target
# without the forget set: what exact unlearning would give, so a method using it is privileged).
RETAIN_AUX = "benchmark:retain"
AUX_MODEL_KEYWORDS = {"benchmark:base": "aux_model_path", RETAIN_AUX: "retain_model_path"}


# name -> module that registers it, imported on first use (benchmarks pull in models and data)
BENCHMARK_MODULES = {
    "embedded": "atwu_plugin.tasks.embedded",
    "rwku_tiny": "atwu_plugin.tasks.rwku_tiny",
    "rwku_real": "atwu_plugin.tasks.rwku_real",
    "tofu_tiny": "atwu_plugin.tasks.tofu_tiny",
    "tofu_real": "atwu_plugin.tasks.tofu_real",
}


def get_benchmark(name: str, **options):
    import importlib

    if name not in BENCHMARKS:
        # the named module, or all of them so that an unknown name's error lists every benchmark
        for module in [BENCHMARK_MODULES[name]] if name in BENCHMARK_MODULES else BENCHMARK_MODULES.values():
            importlib.import_module(module)
    return BENCHMARKS.build(name, **options)
