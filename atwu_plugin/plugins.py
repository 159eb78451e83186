"""Plugin discovery: trainers, weighters, losses, datasets, collators, evaluators and metrics
from other packages and local modules, fed into the one registry (``atwu_plugin.registry``).

Two ways to contribute, modelled on lm-evaluation-harness (entry points for packaged code,
``--plugins`` for local code):

* **Entry points** (zero configuration once the package is installed). OpenUnlearning's
  kinds keep OpenUnlearning's group names, ``open_unlearning.trainers``,
  ``open_unlearning.datasets``, ``open_unlearning.collators``, ``open_unlearning.evaluators``
  and ``open_unlearning.metrics``; this package's own kinds are ``atwu_plugin.weighters``,
  ``atwu_plugin.forget_losses`` and ``atwu_plugin.retain_losses``::

      [options.entry_points]
      open_unlearning.trainers =
          LastTokenGA = last_token_ga.trainer:LastTokenGA
      atwu_plugin.weighters =
          last_token = last_token_ga.weighter:LastTokenWeighter

  The value is a class (registered under the entry point's name; OpenUnlearning also finds
  a trainer under its ``__name__``), a module (imported for its ``register_*`` decorators), or
  a zero-argument callable returning a class, a list of classes or a ``{name: class}`` dict.
  In ``open_unlearning.metrics`` a plain function is the metric function itself (wrapped in
  OpenUnlearning's ``UnlearningMetric`` under the entry point's name).
  A package can also ship Hydra configs: ``open_unlearning.configs`` entries name a Python
  package holding a config tree (``trainer/``, ``experiment/``, ...), appended to Hydra's
  search path by ``hydra_plugins/atwu_plugin_searchpath``.

* **Local modules**, not packaged: ``ATWU_PLUGIN_MODULES=my_method,/path/to/other.py``
  (comma-separated importable names or ``.py`` paths; ``atwu-unlearn --plugins`` and
  ``atwu-leaderboard --plugins`` set it). A module registers with the decorators of this
  module::

      from atwu_plugin.plugins import register_trainer, register_weighter

      @register_trainer
      class MyMethod(PluginUnlearnTrainer): ...

      @register_weighter("my_weighter")
      class MyWeighter(TokenWeighter): ...

``load_plugins()`` registers everything found into ``atwu_plugin.registry.REGISTRIES``; the
hosts call it (``atwu_plugin.hosts.components``; the OpenUnlearning host then pushes the
OpenUnlearning kinds into OU's own registries, ``atwu_plugin.hosts.openunlearning_registry``).
Nothing here imports torch or OpenUnlearning.
"""

import importlib
import importlib.util
import logging
import os
import sys
import types
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple

logger = logging.getLogger(__name__)

ENTRY_POINT_PREFIX = "open_unlearning."  # OpenUnlearning's kinds keep OpenUnlearning's group names
OU_GROUPS = ("trainers", "datasets", "collators", "evaluators", "metrics")
ATWU_ENTRY_POINT_PREFIX = "atwu_plugin."  # kinds only this package has
ATWU_GROUPS = ("weighters", "forget_losses", "retain_losses")
GROUPS = OU_GROUPS + ATWU_GROUPS
ENTRY_POINT_GROUPS = {g: (ENTRY_POINT_PREFIX if g in OU_GROUPS else ATWU_ENTRY_POINT_PREFIX) + g for g in GROUPS}
CONFIGS_GROUP = ENTRY_POINT_PREFIX + "configs"
ENV_MODULES = "ATWU_PLUGIN_MODULES"


class PluginLoadError(RuntimeError):
    """A plugin could not be loaded or registered; the message names the culprit."""


@dataclass(frozen=True)
class PluginItem:
    group: str  # one of GROUPS
    name: str  # registry name
    obj: Any  # class, metric object or function
    source: str  # human-readable origin, for error messages


# ---- registration decorators for local modules ------------------------------------------
_LOCAL: Dict[str, Dict[str, PluginItem]] = {g: {} for g in GROUPS}


def _add(registry: Dict[str, PluginItem], item: PluginItem) -> None:
    known = registry.get(item.name)
    if known is not None and known.obj is not item.obj:
        raise PluginLoadError(
            f"{item.group[:-1]} name {item.name!r} is provided twice: by {known.source} and by {item.source}; rename one"
        )
    registry.setdefault(item.name, item)


def _register(group: str, obj=None, *, name: Optional[str] = None):
    if isinstance(obj, str):  # @register_weighter("name"), as weighting.register_weighter
        obj, name = None, obj

    def deco(target):
        item_name = name or getattr(target, "__name__", None) or getattr(target, "name", None)
        if not item_name:
            raise PluginLoadError(f"cannot register {target!r} as a {group[:-1]}: give it a name=")
        module = getattr(target, "__module__", None) or "?"
        _add(_LOCAL[group], PluginItem(group, item_name, target, f"module {module!r}"))
        return target

    return deco(obj) if obj is not None else deco


def register_trainer(obj=None, *, name: Optional[str] = None):
    """Decorator: register a trainer class (``handler:`` of a trainer config)."""
    return _register("trainers", obj, name=name)


def register_dataset(obj=None, *, name: Optional[str] = None):
    return _register("datasets", obj, name=name)


def register_collator(obj=None, *, name: Optional[str] = None):
    return _register("collators", obj, name=name)


def register_evaluator(obj=None, *, name: Optional[str] = None):
    return _register("evaluators", obj, name=name)


def register_metric(obj=None, *, name: Optional[str] = None):
    """Decorator for a metric function ``fn(model, **kwargs) -> dict`` (or an OU metric object)."""
    return _register("metrics", obj, name=name)


def register_weighter(obj=None, *, name: Optional[str] = None):
    """Decorator: register a ``TokenWeighter`` class (``method_args.weighter.name``);
    ``@register_weighter("my_weighter")`` names it."""
    return _register("weighters", obj, name=name)


def register_forget_loss(obj=None, *, name: Optional[str] = None):
    """Decorator: register a forget loss class (``method_args.forget_loss.name``)."""
    return _register("forget_losses", obj, name=name)


def register_retain_loss(obj=None, *, name: Optional[str] = None):
    """Decorator: register a retain loss class (``method_args.retain_loss.name``)."""
    return _register("retain_losses", obj, name=name)


# ---- entry points -----------------------------------------------------------------------
def _entry_points(group: str) -> list:
    eps = metadata.entry_points()
    if hasattr(eps, "select"):
        return list(eps.select(group=group))
    return list(eps.get(group, []))  # pragma: no cover - Python < 3.10


def _dist_label(ep) -> str:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "an unknown package"
    try:
        return f"package {dist.metadata['Name']} {dist.version}"
    except Exception:  # pragma: no cover - broken metadata
        return "an unknown package"


def _describe(ep) -> str:
    return f"entry point {ep.name!r} = {ep.value!r} (group {ep.group!r}) of {_dist_label(ep)}"


def _expand(group: str, name: str, obj: Any, source: str) -> List[PluginItem]:
    """Turn a loaded entry point value into registrable items."""
    if isinstance(obj, types.ModuleType):
        return []  # imported for its register_* decorators, collected from _LOCAL
    if isinstance(obj, type) or group == "metrics":
        return [PluginItem(group, name, obj, source)]
    if callable(obj):
        produced = obj()
        if isinstance(produced, type):
            return [PluginItem(group, name, produced, source)]
        if isinstance(produced, dict):
            return [PluginItem(group, n, o, source) for n, o in produced.items()]
        if isinstance(produced, (list, tuple)):
            return [PluginItem(group, o.__name__, o, source) for o in produced]
        if produced is None:
            return []  # a register() hook that used the decorators
    raise PluginLoadError(f"{source}: expected a class, a module or a callable returning classes, got {obj!r}")


def load_entry_points(group: str) -> List[PluginItem]:
    """Load every entry point of ``group`` (``ENTRY_POINT_GROUPS[group]``, e.g.
    ``open_unlearning.trainers``); a failure names the entry point."""
    items = []
    for ep in _entry_points(ENTRY_POINT_GROUPS[group]):
        source = _describe(ep)
        try:
            obj = ep.load()
            items.extend(_expand(group, ep.name, obj, source))
        except PluginLoadError:
            raise
        except Exception as err:
            raise PluginLoadError(f"could not load {source}: {type(err).__name__}: {err}") from err
    return items


def config_packages() -> List[str]:
    """Packages named by ``open_unlearning.configs`` entry points (not imported here)."""
    return [ep.value.split(":")[0].strip() for ep in _entry_points(CONFIGS_GROUP)]


# ---- local modules ----------------------------------------------------------------------
_LOADED_LOCAL: Dict[str, types.ModuleType] = {}


def local_module_specs(value: Optional[str] = None) -> List[str]:
    value = os.environ.get(ENV_MODULES, "") if value is None else value
    return [s.strip() for s in value.split(",") if s.strip()]


def _import_path(path: Path) -> types.ModuleType:
    name = "atwu_local_plugin_" + "".join(c if c.isalnum() else "_" for c in str(path.resolve().with_suffix("")))
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before exec: dataclasses and pickling look the module up
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def load_local_modules(value: Optional[str] = None) -> List[types.ModuleType]:
    """Import the modules named in ``ATWU_PLUGIN_MODULES`` (or ``value``), once each."""
    modules = []
    for spec in local_module_specs(value):
        if spec in _LOADED_LOCAL:
            modules.append(_LOADED_LOCAL[spec])
            continue
        is_path = spec.endswith(".py") or os.sep in spec or (os.altsep and os.altsep in spec)
        try:
            if is_path:
                path = Path(spec).expanduser()
                if not path.is_file():
                    raise FileNotFoundError(f"no such file: {path}")
                module = _import_path(path)
            else:
                module = importlib.import_module(spec)
        except Exception as err:
            raise PluginLoadError(f"could not import plugin module {spec!r} named in {ENV_MODULES}: {type(err).__name__}: {err}") from err
        _LOADED_LOCAL[spec] = module
        modules.append(module)
    return modules


# ---- discovery --------------------------------------------------------------------------
def discover(groups: Iterable[str] = GROUPS, modules: Optional[str] = None) -> Dict[str, Dict[str, PluginItem]]:
    """Every plugin, by group then name: entry points, then local modules (``modules`` or
    ``ATWU_PLUGIN_MODULES``). The same object under the same name twice is fine (our own entry
    points list our built-ins); two different objects under one name are an error naming
    both sources."""
    groups = tuple(groups)
    unknown = set(groups) - set(GROUPS)
    if unknown:
        raise ValueError(f"unknown plugin groups {sorted(unknown)}; expected some of {GROUPS}")
    found: Dict[str, Dict[str, PluginItem]] = {g: {} for g in groups}
    items: List[PluginItem] = []
    for group in groups:
        items.extend(load_entry_points(group))
    load_local_modules(modules)
    for group in groups:
        items.extend(_LOCAL[group].values())
    for item in items:
        _add(found[item.group], item)
    return found


_FED: Dict[Tuple[Tuple[str, ...], Tuple[str, ...]], Dict[str, Dict[str, PluginItem]]] = {}


def load_plugins(groups: Iterable[str] = GROUPS, modules: Optional[str] = None) -> Dict[str, Dict[str, PluginItem]]:
    """Discover the plugins of ``groups`` and register them into the one registry
    (``atwu_plugin.registry.REGISTRIES``); returns what :func:`discover` found.

    Once per set of groups and plugin modules (a host calls it before every lookup). A
    plugin whose name is taken by another object (e.g. a weighter named ``wga``) is a
    ``PluginLoadError`` naming the plugin."""
    from atwu_plugin.registry import REGISTRIES

    groups = tuple(groups)
    key = (groups, tuple(local_module_specs(modules)))
    if key in _FED:
        return _FED[key]
    found = discover(groups, modules)
    for group, items in found.items():
        registry = REGISTRIES[group]
        for name, item in items.items():
            if name in registry and registry.get(name) is not item.obj:
                known = registry.get(name)
                where = f"{getattr(known, '__module__', '?')}.{getattr(known, '__qualname__', known)}"
                raise PluginLoadError(f"{registry.kind} {name!r} from {item.source} would replace {where}; "
                                      f"rename the plugin's {registry.kind}")
            registry.register(name)(item.obj)
    _FED[key] = found
    return found
