"""``last_token``: a token weighter that puts a forget answer's whole weight on its last answer
token (the token LastTokenGA ascends on), for ``TokenWeightedUnlearn``.

A deliberately small weighter that shows the weighter contract: subclass ``TokenWeighter``,
implement ``compute(inputs) -> w [B, T]`` (the base class zeroes prompt/padding tokens and
detaches), register a name. Any forget loss, normalizer and retain loss of the package then
combine with it by config (``configs/trainer/TW_LastToken.yaml``).
"""

from typing import Optional

import torch

from atwu_plugin.losses.tokens import answer_mask
from atwu_plugin.plugins import register_weighter
from atwu_plugin.weighting import TokenWeighter, WeightingInputs


def last_answer_token_mask(labels: torch.Tensor, skip_token_id=None) -> torch.Tensor:
    """Bool ``[B, T]``: True at the last answer token of each row (``skip_token_id``, e.g. the
    EOS that OpenUnlearning appends, is not counted as an answer token)."""
    mask = answer_mask(labels)
    if skip_token_id is not None:
        mask &= labels != skip_token_id
    positions = torch.arange(labels.shape[1], device=labels.device).expand_as(labels)
    last = torch.where(mask, positions, torch.full_like(positions, -1)).max(dim=1).values
    return (positions == last[:, None]) & mask


@register_weighter("last_token")
class LastTokenWeighter(TokenWeighter):
    def __init__(self, skip_token_id: Optional[int] = None):
        if skip_token_id is not None and (not isinstance(skip_token_id, int) or skip_token_id < 0):
            raise ValueError(f"last_token: skip_token_id must be a token id (an integer >= 0) or null, "
                             f"got {skip_token_id!r}")
        self.skip_token_id = skip_token_id

    def compute(self, inputs: WeightingInputs) -> torch.Tensor:
        return last_answer_token_mask(inputs.labels, self.skip_token_id).float()
