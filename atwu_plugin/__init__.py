"""atwu-plugin: ATWU and token-weighted LLM unlearning, as an OpenUnlearning plugin.

Layers (imports only go downward):
    cli -> hosts -> trainers -> evals / data / zoo -> weighting -> losses
``losses`` and ``weighting`` import nothing but torch.
"""

__version__ = "0.1.0"
