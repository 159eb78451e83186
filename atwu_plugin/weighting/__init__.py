"""Token weighters (pure torch). Importing this package registers every built-in weighter."""

import importlib
import pkgutil

from atwu_plugin.weighting.base import WEIGHTERS, TokenWeighter, WeighterSetup, WeightingInputs, register_weighter

# Every module of this package is imported for its registration side effect: a new weighter
# is one file here, with no list to extend.
for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["WEIGHTERS", "TokenWeighter", "WeighterSetup", "WeightingInputs", "register_weighter", "build_weighter"]


def build_weighter(name: str, **kwargs) -> TokenWeighter:
    return WEIGHTERS.build(name, **kwargs)
