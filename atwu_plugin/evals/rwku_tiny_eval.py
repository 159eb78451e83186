"""The RWKU-tiny evaluator: RWKU's metrics on the forget batch plus collateral on other targets.

Two :class:`~atwu_plugin.evals.rwku_eval.RWKUEvaluator` passes, flattened into one dict of
numbers (what the leaderboard stores):

* on the **forget targets** (targets 1-10): ``forget_fb/qa/aa/all`` (lower is better),
  ``neighbor_fb/qa/all`` on their neighbor probes (RWKU's locality test, higher is better),
  MIA (``mia_<score>_auc``, ``mia_forget_loss``, ``mia_retain_loss``) and
  ``utility_fluency``;
* on the **other targets** (11-50, known to the model and not unlearned): their forget-level
  probes, reported as ``others_fb/qa/aa/all`` (collateral damage on other people; higher is
  better).

Probes are cut to the first ``probes_per_level`` per target and level, the cut the RWKU-tiny
model was taught (``atwu_plugin.data.rwku_tiny``). MIA members are the ``forget_mia`` passages
the model was trained on (first ``mia_per_target``, truncated to ``mia_max_length`` tokens as in
training); non-members are ``retain_mia`` passages minus any text the model was trained on
(``mia_exclude_texts``).
"""

from typing import Any, Dict, Optional, Sequence

from atwu_plugin.evals.rwku_eval import RWKUEvaluator

MAIN_METRICS = ("forget", "neighbor", "mia", "fluency")
ALL_TINY_METRICS = MAIN_METRICS + ("others",)


class RWKUTinyEvaluator:
    def __init__(
        self,
        tokenizer,
        template_args: Dict[str, Any],
        data_root,
        forget_targets,
        other_targets,
        probes_per_level: int,
        others_per_level: int,
        mia_per_target: int,
        mia_max_length: int,
        mia_exclude_texts: Sequence[str] = (),
        metrics: Sequence[str] = ALL_TINY_METRICS,
        batch_size: int = 64,
        max_new_tokens: int = 16,
        max_new_tokens_long: int = 32,
        show_progress: bool = False,
    ):
        unknown = [m for m in metrics if m not in ALL_TINY_METRICS]
        if unknown:
            raise ValueError(f"RWKU-tiny metrics {unknown}: expected a subset of {list(ALL_TINY_METRICS)}")
        common = dict(prompt_style="plain", aggregate="pooled", batch_size=batch_size,
                      max_new_tokens=max_new_tokens, max_new_tokens_long=max_new_tokens_long,
                      show_progress=show_progress)
        main = [m for m in metrics if m in MAIN_METRICS]
        self.main: Optional[RWKUEvaluator] = None
        if main:
            self.main = RWKUEvaluator(
                tokenizer, template_args, data_root, forget_targets, metrics=main,
                max_probes_per_level=probes_per_level, max_items_per_set=mia_per_target,
                mia_max_length=mia_max_length, mia_exclude_texts=mia_exclude_texts, **common,
            )
        self.others: Optional[RWKUEvaluator] = None
        if "others" in metrics:
            data = self.main.data if self.main is not None else data_root  # read the files once
            self.others = RWKUEvaluator(tokenizer, template_args, data, other_targets, metrics=["forget"],
                                        max_probes_per_level=others_per_level, **common)

    def evaluate(self, model) -> Dict[str, Any]:
        """Flat ``{metric: number or None}`` (see the module docstring)."""
        out: Dict[str, Any] = {}
        if self.main is not None:
            out.update(_numbers(self.main.evaluate(model)))
        if self.others is not None:
            res = _numbers(self.others.evaluate(model))
            out.update({"others_" + k[len("forget_"):]: v for k, v in res.items() if k.startswith("forget_")})
        return out


def _numbers(result: Dict[str, Any]) -> Dict[str, Any]:
    return {k: v for k, v in result.items() if v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))}


__all__ = ["RWKUTinyEvaluator", "ALL_TINY_METRICS"]
