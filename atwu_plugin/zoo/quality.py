"""Quality gates of the tiny models: greedy ROUGE-L recall on forget / retain / world probes."""

from typing import Dict

from atwu_plugin.data.generator import load_split
from atwu_plugin.evals.tofu_eval import TofuEvaluator
from atwu_plugin.zoo.loading import load_causal_lm, load_tokenizer


def model_quality(model_path: str, data_dir: str, template_args: dict, forget_split: str = "forget10",
                  retain_split: str = "retain90", n_retain: int = 200, max_new_tokens: int = 48) -> Dict[str, float]:
    """ROUGE-L recall of greedy answers (OU's definition) on the forget split, the first
    ``n_retain`` retain questions and the world probes."""
    tok = load_tokenizer(model_path)
    split = lambda name: load_split(f"{data_dir}/{name}.json")  # noqa: E731
    ev = TofuEvaluator(
        tok,
        template_args,
        {"forget": split(forget_split), "retain": split(retain_split)[:n_retain], "world": split("world_facts")},
        max_new_tokens=max_new_tokens,
        batch_size=64,
        progress=False,
    )
    m = ev.evaluate(load_causal_lm(model_path))
    return {"forget_rouge": m["forget_rouge"], "retain_rouge": m["retain_rouge"], "world_rouge": m["world_rouge"],
            "forget_prob": m["forget_prob"], "retain_prob": m["retain_prob"]}
