"""The OpenUnlearning host's registration: this package's trainers and every plugin
(``atwu_plugin.plugins``: entry points, ``--plugins`` modules) pushed into OpenUnlearning's
own registries, so OU's ``src/train.py``/``src/eval.py`` find them by name.

Called by the Hydra SearchPathPlugin (``hydra_plugins/atwu_plugin_searchpath``) inside OU's
processes. Nothing here imports OpenUnlearning (or torch) at import time.
"""

import importlib
import importlib.util
import logging
import os
import sys
import types
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from atwu_plugin.plugins import GROUPS, OU_GROUPS, PluginItem, PluginLoadError

logger = logging.getLogger(__name__)

ENV_VERBOSE = "ATWU_PLUGIN_VERBOSE"
# OpenUnlearning's top-level module names (its ``src/`` is on sys.path when its scripts run).
OU_MODULES = {"trainer": "trainer", "data": "data", "evals": "evals", "metrics": "evals.metrics"}


def _looks_like_ou(mods: Dict[str, types.ModuleType]) -> bool:
    return (
        hasattr(mods.get("trainer"), "TRAINER_REGISTRY")
        and hasattr(mods.get("trainer"), "_register_trainer")
        and hasattr(mods.get("data"), "_register_data")
        and hasattr(mods.get("evals"), "EVALUATOR_REGISTRY")
        and hasattr(mods.get("metrics"), "METRICS_REGISTRY")
    )


def _ou_src_dir() -> Optional[Path]:
    """OU's ``src/`` if the importable ``trainer`` package is OU's (checked on disk, not imported)."""
    try:
        spec = importlib.util.find_spec("trainer")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin:
        return None
    src = Path(spec.origin).resolve().parent.parent
    needed = ("trainer/unlearn/base.py", "data/__init__.py", "evals/__init__.py", "evals/metrics/__init__.py")
    return src if all((src / n).is_file() for n in needed) else None


def openunlearning_modules(import_modules: Optional[bool] = None) -> Optional[Dict[str, types.ModuleType]]:
    """OpenUnlearning's registry modules, or None when OU is not there.

    ``import_modules``: True imports them; False uses only modules already imported (OU's
    ``train.py``/``eval.py`` import them before Hydra starts); None (default) imports them
    only if ``trainer`` resolves to an OU ``src/`` tree, so that an unrelated top-level
    ``data`` or ``trainer`` module of another Hydra app is never imported.
    """
    if import_modules is None:
        import_modules = _ou_src_dir() is not None
    mods = {}
    for key, name in OU_MODULES.items():
        mod = sys.modules.get(name)
        if mod is None and import_modules:
            try:
                mod = importlib.import_module(name)
            except ImportError as err:
                logger.debug("OpenUnlearning not importable (%s): %s", name, err)
                return None
        if mod is None:
            return None
        mods[key] = mod
    if _looks_like_ou(mods):
        return mods
    if hasattr(mods.get("trainer"), "TRAINER_REGISTRY"):  # OU, but not the registry API we know
        logger.warning(
            "OpenUnlearning's registries do not have the expected names (TRAINER_REGISTRY, _register_trainer, "
            "_register_data, EVALUATOR_REGISTRY, METRICS_REGISTRY): plugin classes were not registered"
        )
    return None


_WRAPPED_METRICS: Dict[tuple, Any] = {}


def _ou_metric(name: str, obj: Any, metrics_mod) -> Any:
    if hasattr(obj, "evaluate") and hasattr(obj, "name"):
        return obj
    if callable(obj):
        from evals.metrics.base import UnlearningMetric  # OU, present since metrics_mod is

        key = (name, obj, id(metrics_mod))
        if key not in _WRAPPED_METRICS:
            _WRAPPED_METRICS[key] = UnlearningMetric(name=name, metric_fn=obj)
        return _WRAPPED_METRICS[key]
    raise PluginLoadError(f"metric {name!r}: expected a function or an UnlearningMetric, got {obj!r}")


def _put(registry: dict, registrar: Optional[Callable], key: str, obj: Any, item: PluginItem, kind: str) -> bool:
    existing = registry.get(key)
    if existing is obj:
        return False
    if existing is not None and "_atwu_plugin_source" not in getattr(existing, "__dict__", {}):
        where = f"{getattr(existing, '__module__', '?')}.{getattr(existing, '__qualname__', existing)}"
        raise PluginLoadError(
            f"{kind} {key!r} from {item.source} would replace OpenUnlearning's {where}; rename the plugin's {kind}"
        )
    if registrar is not None and getattr(obj, "__name__", None) == key:
        registrar(obj)
    else:
        registry[key] = obj
    return True


def _mark(obj: Any, source: str) -> Any:
    try:
        obj._atwu_plugin_source = source
    except (AttributeError, TypeError):  # builtins/extension types: cannot tag, harmless
        pass
    return obj


def register_into_openunlearning(import_modules: Optional[bool] = None, modules: Optional[str] = None) -> Dict[str, List[str]]:
    """Register this package's trainers and all plugins into OpenUnlearning's registries
    (after feeding the one registry: plugin weighters and losses become usable by name).

    Idempotent. Returns ``{group: [names registered by this call]}``; returns ``{}`` (and
    logs at debug level) when OpenUnlearning is not importable. Raises ``PluginLoadError``
    when an entry point or plugin module fails to load, or a name would replace one of
    OpenUnlearning's own classes.
    """
    ou = openunlearning_modules(import_modules)
    if ou is None:
        logger.debug("OpenUnlearning's registries are not importable: nothing registered")
        return {}
    from atwu_plugin.hosts.components import load_components
    from atwu_plugin.hosts.openunlearning import rebase_on_openunlearning
    from atwu_plugin.registry import TRAINERS

    found = load_components(GROUPS, modules=modules)
    done: Dict[str, List[str]] = {g: [] for g in OU_GROUPS}
    trainer_mod, data_mod, evals_mod, metrics_mod = ou["trainer"], ou["data"], ou["evals"], ou["metrics"]
    # this package's trainers and the plugins' (a plugin weighter or loss is used through them)
    trainers = {n: PluginItem("trainers", n, TRAINERS.get(n), "atwu-plugin") for n in TRAINERS.names()}
    trainers.update(found["trainers"])
    for name, item in trainers.items():
        cls = _mark(rebase_on_openunlearning(item.obj), item.source)
        if _put(trainer_mod.TRAINER_REGISTRY, trainer_mod._register_trainer, name, cls, item, "trainer"):
            done["trainers"].append(name)
        if cls.__name__ != name:  # OU keys by __name__: make the class findable both ways
            _put(trainer_mod.TRAINER_REGISTRY, None, cls.__name__, cls, item, "trainer")
    for name, item in found["datasets"].items():
        if _put(data_mod.DATASET_REGISTRY, data_mod._register_data, name, _mark(item.obj, item.source), item, "dataset"):
            done["datasets"].append(name)
    for name, item in found["collators"].items():
        if _put(data_mod.COLLATOR_REGISTRY, data_mod._register_collator, name, _mark(item.obj, item.source), item, "collator"):
            done["collators"].append(name)
    for name, item in found["evaluators"].items():
        registrar = getattr(evals_mod, "_register_evaluator", None)
        if _put(evals_mod.EVALUATOR_REGISTRY, registrar, name, _mark(item.obj, item.source), item, "evaluator"):
            done["evaluators"].append(name)
    for name, item in found["metrics"].items():
        metric = _mark(_ou_metric(name, item.obj, metrics_mod), item.source)
        # OU keys metrics by metric.name; a plugin's name is its entry point / decorator name
        if _put(metrics_mod.METRICS_REGISTRY, None, name, metric, item, "metric"):
            done["metrics"].append(name)
    summary = {g: names for g, names in done.items() if names}
    if summary:
        logger.info("registered into OpenUnlearning: %s", summary)
        if os.environ.get(ENV_VERBOSE):
            print(f"[atwu-plugin] registered into OpenUnlearning: {summary}", file=sys.stderr)
    return summary
