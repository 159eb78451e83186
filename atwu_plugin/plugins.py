"""Plugin discovery: methods, datasets, collators, evaluators and metrics from other packages.

Two ways to contribute, modelled on lm-evaluation-harness (entry points for packaged code,
``--plugins`` for local code):

* **Entry points** (zero configuration once the package is installed), in the groups
  ``open_unlearning.trainers``, ``open_unlearning.datasets``, ``open_unlearning.collators``,
  ``open_unlearning.evaluators`` and ``open_unlearning.metrics``::

      [options.entry_points]
      open_unlearning.trainers =
          LastTokenGA = last_token_ga.trainer:LastTokenGA

  The value is a class (registered under the entry point's name; OpenUnlearning also finds
  it under its ``__name__``), a module (imported for its ``register_*`` decorators), or a
  zero-argument callable returning a class, a list of classes or a ``{name: class}`` dict.
  In ``open_unlearning.metrics`` a plain function is the metric function itself (wrapped in
  OpenUnlearning's ``UnlearningMetric`` under the entry point's name).
  A package can also ship Hydra configs: ``open_unlearning.configs`` entries name a Python
  package holding a config tree (``trainer/``, ``experiment/``, ...), appended to Hydra's
  search path by ``hydra_plugins/atwu_plugin_searchpath``.

* **Local modules**, not packaged: ``ATWU_PLUGIN_MODULES=my_method,/path/to/other.py``
  (comma-separated importable names or ``.py`` paths; ``atwu-unlearn --plugins`` sets it).
  A module registers with the decorators of this module::

      from atwu_plugin.plugins import register_trainer

      @register_trainer
      class MyMethod(PluginUnlearnTrainer): ...

``register_into_openunlearning()`` pushes everything (and this package's own trainers) into
OpenUnlearning's registries. Nothing here imports OpenUnlearning (or torch) at import time.
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
from typing import Any, Callable, Dict, Iterable, List, Optional

logger = logging.getLogger(__name__)

ENTRY_POINT_PREFIX = "open_unlearning."
GROUPS = ("trainers", "datasets", "collators", "evaluators", "metrics")
CONFIGS_GROUP = ENTRY_POINT_PREFIX + "configs"
ENV_MODULES = "ATWU_PLUGIN_MODULES"
ENV_VERBOSE = "ATWU_PLUGIN_VERBOSE"

# OpenUnlearning's top-level module names (its ``src/`` is on sys.path when its scripts run).
OU_MODULES = {"trainer": "trainer", "data": "data", "evals": "evals", "metrics": "evals.metrics"}


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
    """Load every ``open_unlearning.<group>`` entry point; a failure names the entry point."""
    items = []
    for ep in _entry_points(ENTRY_POINT_PREFIX + group):
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
def builtin_items(groups: Iterable[str] = GROUPS) -> List[PluginItem]:
    """This package's own trainers (imports torch/transformers: call only when needed)."""
    if "trainers" not in groups:
        return []
    from atwu_plugin.trainers import TRAINERS, get_trainer_class

    if not TRAINERS.names():
        get_trainer_class("TokenWeightedUnlearn")  # populates the built-ins
    return [PluginItem("trainers", n, TRAINERS.get(n), "atwu-plugin") for n in TRAINERS.names()]


def discover(groups: Iterable[str] = GROUPS, include_builtin: bool = True, modules: Optional[str] = None) -> Dict[str, Dict[str, PluginItem]]:
    """Everything that should be registered, by group then name.

    Order: this package's trainers, entry points, local modules. The same object under the
    same name twice is fine (our own entry points list our built-ins); two different objects
    under one name are an error naming both sources.
    """
    groups = tuple(groups)
    unknown = set(groups) - set(GROUPS)
    if unknown:
        raise ValueError(f"unknown plugin groups {sorted(unknown)}; expected some of {GROUPS}")
    found: Dict[str, Dict[str, PluginItem]] = {g: {} for g in groups}
    items: List[PluginItem] = list(builtin_items(groups)) if include_builtin else []
    for group in groups:
        items.extend(load_entry_points(group))
    load_local_modules(modules)
    for group in groups:
        items.extend(_LOCAL[group].values())
    for item in items:
        _add(found[item.group], item)
    return found


# ---- OpenUnlearning ---------------------------------------------------------------------
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
    """Register this package's trainers and all plugins into OpenUnlearning's registries.

    Idempotent. Returns ``{group: [names registered by this call]}``; returns ``{}`` (and
    logs at debug level) when OpenUnlearning is not importable. Raises ``PluginLoadError``
    when an entry point or plugin module fails to load, or a name would replace one of
    OpenUnlearning's own classes.
    """
    ou = openunlearning_modules(import_modules)
    if ou is None:
        logger.debug("OpenUnlearning's registries are not importable: nothing registered")
        return {}
    from atwu_plugin.hosts.openunlearning import rebase_on_openunlearning

    found = discover(GROUPS, include_builtin=True, modules=modules)
    done: Dict[str, List[str]] = {g: [] for g in GROUPS}
    trainer_mod, data_mod, evals_mod, metrics_mod = ou["trainer"], ou["data"], ou["evals"], ou["metrics"]
    for name, item in found["trainers"].items():
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
