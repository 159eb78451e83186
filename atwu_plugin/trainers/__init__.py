"""Plugin trainers, by class name (the ``handler:`` of a trainer config), in the one registry
(``atwu_plugin.registry.TRAINERS``). Importing this package does not import torch: the
built-in trainers register on first lookup."""

from atwu_plugin.registry import TRAINERS


def register_builtin_trainers() -> None:
    """Register this package's trainers (idempotent: the same class under its name)."""
    from atwu_plugin.trainers.atwu import ATWU
    from atwu_plugin.trainers.rmu import PluginRMU
    from atwu_plugin.trainers.token_weighted import TokenWeightedUnlearn

    TRAINERS.register("TokenWeightedUnlearn")(TokenWeightedUnlearn)
    TRAINERS.register("ATWU")(ATWU)
    TRAINERS.register("PluginRMU")(PluginRMU)


def get_trainer_class(name: str):
    """The trainer class registered as ``name`` (this package's, and plugins' once a host
    loaded them: ``atwu_plugin.hosts.components.trainer_class`` loads them first)."""
    register_builtin_trainers()
    return TRAINERS.get(name)
