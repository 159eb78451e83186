"""Tiny name -> class registries with errors that list what is available, and the one
registry of components both hosts read.

``REGISTRIES`` holds, by group, every trainer, token weighter, forget/retain loss, dataset,
collator, evaluator and metric. It is fed by the package itself (each module registers its
classes when imported), by entry points and by ``--plugins`` modules
(``atwu_plugin.plugins.load_plugins``); the lite host and the OpenUnlearning host read it
(``atwu_plugin.hosts.components``). Pure Python (no torch).
"""

import math
import numbers
from typing import Callable, Dict, Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """Raised for a name that is not registered; the message lists the known names."""

    def __str__(self) -> str:  # KeyError would print the repr with quotes
        return str(self.args[0])


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._items: Dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items and self._items[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        if name not in self._items:
            known = ", ".join(sorted(self._items)) or "(none)"
            raise UnknownNameError(f"unknown {self.kind} {name!r}; expected one of: {known}")
        return self._items[name]

    def build(self, name: str, **kwargs):
        return self.get(name)(**kwargs)

    def names(self):
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items


# ---- the one registry, by group (the plugin groups of atwu_plugin.plugins) -----------------
TRAINERS: Registry = Registry("trainer")
WEIGHTERS: Registry = Registry("token weighter")
FORGET_LOSSES: Registry = Registry("forget loss")
RETAIN_LOSSES: Registry = Registry("retain loss")
DATASETS: Registry = Registry("dataset")
COLLATORS: Registry = Registry("collator")
EVALUATORS: Registry = Registry("evaluator")
METRICS: Registry = Registry("metric")
REGISTRIES: Dict[str, Registry] = {
    "trainers": TRAINERS,
    "weighters": WEIGHTERS,
    "forget_losses": FORGET_LOSSES,
    "retain_losses": RETAIN_LOSSES,
    "datasets": DATASETS,
    "collators": COLLATORS,
    "evaluators": EVALUATORS,
    "metrics": METRICS,
}


def check_number(
    owner: str, name: str, value, low=None, high=None, *, low_open=False, high_open=False, integer=False
):
    """Validate a hyperparameter; return it unchanged or raise a ValueError that names the
    owner, the parameter, the value and the expected range, e.g.
    ``npo: beta must be a number in (0, inf), got -1.0``. Floats must be finite."""
    kind = "an integer" if integer else "a number"
    interval = "{}{}, {}{}".format(
        "(" if low is None or low_open else "[",
        "-inf" if low is None else low,
        "inf" if high is None else high,
        ")" if high is None or high_open else "]",
    )
    ok = isinstance(value, numbers.Integral if integer else numbers.Real) and not isinstance(value, bool)
    ok = ok and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        raise ValueError(f"{owner}: {name} must be {kind} in {interval}, got {value!r}")
    return value
