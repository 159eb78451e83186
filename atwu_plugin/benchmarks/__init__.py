"""Benchmarks the lite host can run: data + models + evaluator behind one name.

A benchmark object exposes ``prepare()``, ``model_path``, ``retain_model_path``,
``aux_model_path``, ``template_args``, ``tokenizer()``, ``train_datasets(tokenizer)``,
``evaluator(tokenizer)`` and ``trainer_args`` (lite TrainingArguments defaults tuned to it).
"""

from atwu_plugin.registry import Registry

BENCHMARKS: Registry = Registry("benchmark")


def get_benchmark(name: str, **options):
    if not BENCHMARKS.names():
        from atwu_plugin.benchmarks import embedded  # noqa: F401  (registers)
    return BENCHMARKS.build(name, **options)
