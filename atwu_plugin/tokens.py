"""Token constants shared by every layer (no torch, so reports and pure-Python tools import it too).

Convention used throughout the package: every per-token tensor has shape ``[B, T]`` and is
aligned with ``labels`` (HF layout, ``labels`` not shifted). The quantity at position ``t`` is
about predicting ``labels[:, t]`` from the logits/hidden state at position ``t - 1``. Position 0
is never a target. A position is an *answer token* iff ``labels[:, t] != IGNORE_INDEX`` and
``t > 0`` (the torch helpers that apply this are in ``atwu_plugin.losses.tokens``).

``token_kind[b, t]`` (aligned with ``labels``) is the per-token ground-truth kind carried from
the data generator / label sources through the collator to the span metrics and heatmaps.
"""

IGNORE_INDEX = -100  # label of a position that is not a target (HF / PyTorch cross-entropy default)

KIND_NONE = -100  # prompt, padding, position 0: not an answer token
KIND_IGNORE = -1  # answer token without a label (e.g. a name copied from the question)
KIND_TEMPLATE = 0  # generic wording of the answer (not forget-specific)
KIND_SPECIFIC = 1  # forget-specific fact (the oracle's target)
KIND_SHARED = 2  # fact shared verbatim with retain authors (not forget-specific)

# short names (label statistics, generator validation)
KIND_NAMES = {
    KIND_IGNORE: "ignore",
    KIND_TEMPLATE: "template",
    KIND_SPECIFIC: "specific",
    KIND_SHARED: "shared",
}

# long names for people reading a report (heatmap legend)
KIND_LABELS = {
    KIND_NONE: "not scored",
    KIND_IGNORE: "ignored (no label)",
    KIND_TEMPLATE: "template",
    KIND_SPECIFIC: "forget-specific",
    KIND_SHARED: "shared with retain",
}
