"""``ATWU``: Alternating Token-Weighted Unlearning (docs/atwu.md), the trainer name of configs/trainer/ATWU.yaml.

    LM step:  min_theta  sum_t w_t l_t(theta) / sum_t w_t  +  alpha * L_r(theta)
    weights:  w_t = scorer(f_t), f_t = frozen initial-model features; the scorer takes its own
              Adam step(s) on the retain conflict of this step's forget tokens first

It is ``TokenWeightedUnlearn`` with ATWU's defaults and nothing else: the ``atwu`` weighter
(``atwu_plugin.weighting.atwu``: setup pass, alternating scorer update, checkpointed state,
all through the weighter contract), whose options (``ATWUConfig``'s fields) are given flat in
``method_args``; token-level NPO as the forget loss; the weight-sum normalizer.
"""

from atwu_plugin.trainers.token_weighted import TokenWeightedUnlearn
from atwu_plugin.weighting.atwu import answer_tokens  # noqa: F401 - re-exported (benchmarks/zero_memory.py)


NPO_TOKEN = {"name": "npo_token", "beta": 1.0}  # read, never mutated (spec_name copies it)


class ATWU(TokenWeightedUnlearn):
    fixed_weighter = "atwu"

    def __init__(self, *args, forget_loss=NPO_TOKEN, normalizer: str = "weight_sum", **kwargs):
        super().__init__(*args, forget_loss=forget_loss or NPO_TOKEN, normalizer=normalizer, **kwargs)
