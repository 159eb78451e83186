"""Token weighters (pure torch). Importing this package registers every built-in weighter."""

from atwu_plugin.weighting.base import WEIGHTERS, TokenWeighter, WeighterSetup, WeightingInputs, register_weighter

# imported for their registration side effect
from atwu_plugin.weighting import (  # noqa: F401,E402
    atwu,
    oracle,
    reference,
    retain_frequency,
    same_token,
    satimp,
    token_unlearn,
    uniform,
    wga,
)

__all__ = ["WEIGHTERS", "TokenWeighter", "WeighterSetup", "WeightingInputs", "register_weighter", "build_weighter"]


def build_weighter(name: str, **kwargs) -> TokenWeighter:
    return WEIGHTERS.build(name, **kwargs)
