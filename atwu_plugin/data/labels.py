"""Per-token ground-truth kinds carried from the data generator through the collator.

``token_kind[b, t]`` is aligned with ``labels`` (see ``atwu_plugin.losses.tokens``).
"""

import torch

KIND_NONE = -100  # prompt, padding, position 0: not an answer token
KIND_IGNORE = -1  # answer token without a label (e.g. a name copied from the question)
KIND_TEMPLATE = 0  # generic wording of the answer (not forget-specific)
KIND_SPECIFIC = 1  # forget-specific fact (the oracle's target)
KIND_SHARED = 2  # fact shared verbatim with retain authors (not forget-specific)

KIND_NAMES = {
    KIND_IGNORE: "ignore",
    KIND_TEMPLATE: "template",
    KIND_SPECIFIC: "specific",
    KIND_SHARED: "shared",
}


def specific_targets(token_kind: torch.Tensor):
    """Binary labels for span metrics: returns ``(y, valid)``, ``y`` 1 on forget-specific
    tokens, 0 on template/shared tokens; ``valid`` False where the token has no label."""
    valid = token_kind >= 0
    return (token_kind == KIND_SPECIFIC) & valid, valid
