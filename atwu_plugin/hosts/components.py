"""The components both hosts read: this package's trainers, token weighters and losses plus
every plugin's (entry points, ``--plugins`` / ``ATWU_PLUGIN_MODULES`` modules), all in the one
registry (``atwu_plugin.registry.REGISTRIES``).

The lite host looks trainers up with :func:`trainer_class`; the OpenUnlearning host calls
:func:`load_components` and pushes the result into OU's registries
(``atwu_plugin.hosts.openunlearning_registry``). A trainer then builds its weighter and
losses by name from the same registry, whichever host runs it.
"""

from typing import Dict, Iterable, Optional

from atwu_plugin import plugins
from atwu_plugin.registry import TRAINERS

# What a lite run can name: OpenUnlearning's datasets, evaluators and metrics are for OU's
# scripts (their entry points are not imported by the lite host).
LITE_GROUPS = ("trainers", "weighters", "forget_losses", "retain_losses")


def register_builtins() -> None:
    """Register this package's own trainers, weighters and losses (idempotent)."""
    import atwu_plugin.losses.forget  # noqa: F401  (each module registers its classes on import)
    import atwu_plugin.losses.retain  # noqa: F401
    import atwu_plugin.weighting  # noqa: F401
    from atwu_plugin.trainers import register_builtin_trainers

    register_builtin_trainers()


def load_components(groups: Iterable[str] = LITE_GROUPS, modules: Optional[str] = None) -> Dict[str, dict]:
    """Register this package's own components, then the plugins' of ``groups`` (idempotent,
    once per plugin module list). Returns the plugins found, ``{group: {name: PluginItem}}``;
    raises ``plugins.PluginLoadError`` naming a plugin that fails to load or takes a used name."""
    register_builtins()
    return plugins.load_plugins(groups, modules)


def trainer_class(name: str) -> type:
    """The trainer class a config's ``handler:`` names: this package's or a plugin's."""
    load_components()
    return TRAINERS.get(name)
