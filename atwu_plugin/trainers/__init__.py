"""Plugin trainers, by class name (the ``handler:`` of a trainer config)."""

from atwu_plugin.registry import Registry

TRAINERS: Registry = Registry("trainer")


def _register_builtin():
    from atwu_plugin.trainers.token_weighted import TokenWeightedUnlearn

    TRAINERS.register("TokenWeightedUnlearn")(TokenWeightedUnlearn)
    try:
        from atwu_plugin.trainers.atwu import ATWU
    except ImportError as err:  # pragma: no cover - only while ATWU is being developed
        if "atwu_plugin.trainers.atwu" not in str(err):
            raise
    else:
        TRAINERS.register("ATWU")(ATWU)


def get_trainer_class(name: str):
    if not TRAINERS.names():
        _register_builtin()
    return TRAINERS.get(name)
