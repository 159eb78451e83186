"""Hydra SearchPathPlugin of atwu-plugin (found by Hydra in the ``hydra_plugins`` namespace).

For every Hydra app in the environment it appends (lowest priority: the app's own configs
win on a name clash, which is why plugin config names never reuse OpenUnlearning's):

* ``pkg://atwu_plugin.configs`` (trainer/ATWU.yaml, trainer/TW_*.yaml, experiments, ...),
* the config packages that other distributions declare as ``open_unlearning.configs``
  entry points,

and, when the app is OpenUnlearning (its ``trainer``/``data``/``evals`` registries are
importable), registers the plugin classes into OU's registries. Hydra calls this while it
builds the config search path inside ``@hydra.main``: after OU's ``train.py``/``eval.py``
imported their modules and before ``main()`` looks a trainer up by name.

Kept import-light: Hydra imports every ``hydra_plugins`` module at startup.
"""

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

PROVIDER = "atwu-plugin"
CONFIG_PACKAGE = "atwu_plugin.configs"


def _append_once(search_path: ConfigSearchPath, provider: str, path: str) -> None:
    if all(element.path != path for element in search_path.get_path()):
        search_path.append(provider=provider, path=path)


class ATWUPluginSearchPathPlugin(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        from atwu_plugin.hosts.openunlearning_registry import register_into_openunlearning
        from atwu_plugin.plugins import config_packages

        _append_once(search_path, PROVIDER, f"pkg://{CONFIG_PACKAGE}")
        for package in config_packages():
            _append_once(search_path, f"{PROVIDER}:{package}", f"pkg://{package}")
        register_into_openunlearning()
