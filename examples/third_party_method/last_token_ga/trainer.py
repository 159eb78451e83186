"""Gradient ascent on the last answer token of each forget sample (+ NLL on the retain set).

A deliberately small method that shows the plugin contract: subclass
``PluginUnlearnTrainer`` and implement ``unlearning_loss(model, inputs) -> (loss, outputs)``
with OpenUnlearning's batch layout ``{"forget": {...}, "retain": {...}}``. Inside
OpenUnlearning the class is rebased on OU's ``UnlearnTrainer`` (evaluators, DeepSpeed); on the
lite host (``atwu-unlearn --lite --plugins last_token_ga.trainer``) it runs as it is.
"""

from atwu_plugin.losses.tokens import token_logprobs
from atwu_plugin.plugins import register_trainer
from atwu_plugin.trainers.base import PluginUnlearnTrainer, model_inputs
from last_token_ga.weighter import last_answer_token_mask  # one definition of "the last answer token"


@register_trainer  # for `--plugins last_token_ga.trainer`; installed, the entry point registers it
class LastTokenGA(PluginUnlearnTrainer):
    def __init__(self, *args, gamma: float = 1.0, alpha: float = 1.0, skip_eos: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.gamma, self.alpha, self.skip_eos = float(gamma), float(alpha), bool(skip_eos)

    def unlearning_loss(self, model, inputs):
        forget = inputs["forget"]
        labels = forget["labels"]
        outputs = model(**model_inputs(forget))
        eos = getattr(self.host_tokenizer, "eos_token_id", None) if self.skip_eos else None
        last = last_answer_token_mask(labels, eos)
        logp = token_logprobs(outputs.logits, labels)
        forget_loss = (logp * last).sum() / last.sum().clamp_min(1)  # minimizing log p = ascent on NLL
        loss = self.gamma * forget_loss
        if self.alpha and "retain" in inputs:
            retain = inputs["retain"]
            # model_inputs() drops labels (plugin losses work on logits): pass them for HF's NLL
            loss = loss + self.alpha * model(**model_inputs(retain), labels=retain["labels"]).loss
        return loss, outputs
