"""Checks a host runs on a job's configuration before anything is built or loaded: one clear
error line instead of a failure after the models are loaded.

Every check raises ``ValueError`` (``UnknownNameError``, a ``KeyError``, for unknown names)
with a message naming the field, the value and what was expected. Host-independent: the
lite host calls them in ``atwu_plugin.hosts.lite_trainer`` (see docs/reliability.md).

* ``validate_trainer_config(cfg)``: the handler, every ``method_args`` key and value
  (forget loss / weighter / retain loss names and options, ranges, ATWU's settings) and the
  ``args`` keys, by building the cheap loss/weighter objects, so that a typo or an
  out-of-range value fails in milliseconds instead of after the models are loaded.
* ``make_benchmark(name, options)``: a benchmark with its unknown options named.
* ``check_max_positions(model, datasets)``: every sample fits the model's positions.

What a trainer checks on the model and data it is given (``check_vocab``,
``check_has_answer_tokens``) is in ``atwu_plugin.trainers.checks``.
"""

import dataclasses
import difflib
import inspect
from typing import Iterable, Optional

from atwu_plugin.registry import check_number

# method_args keys consumed by the host, not by the trainer class
HOST_METHOD_ARGS = ("on_nonfinite",)
# TrainingArguments that must be positive/non-negative numbers when given
_ARG_RANGES = {
    "learning_rate": dict(low=0),
    "num_train_epochs": dict(low=0, low_open=True),
    "per_device_train_batch_size": dict(low=1, integer=True),
    "per_device_eval_batch_size": dict(low=1, integer=True),
    "gradient_accumulation_steps": dict(low=1, integer=True),
    "weight_decay": dict(low=0),
    "warmup_steps": dict(low=0, integer=True),
    "warmup_ratio": dict(low=0, high=1),
    "max_grad_norm": dict(low=0),
}


# ---- trainer configs ------------------------------------------------------------------------
def _init_params(cls) -> dict:
    """Named parameters of ``cls.__init__`` (no self/*args/**kwargs)."""
    params = inspect.signature(cls.__init__).parameters
    return {n: p for n, p in params.items()
            if n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def _accepted_params(cls) -> dict:
    """Named ``__init__`` parameters of ``cls``, following ``**kwargs`` up the MRO."""
    out = {}
    for klass in cls.__mro__:
        init = vars(klass).get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters
        out.update({n: p for n, p in params.items()
                    if n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and n not in out})
        if not any(p.kind == p.VAR_KEYWORD for p in params.values()) or klass is object:
            break
    return out


def _unknown_keys(where: str, given: Iterable[str], known: Iterable[str], expected: Optional[str] = None) -> None:
    """Raise for keys of ``given`` not in ``known``, listing the known ones (or ``expected``
    when the list is too long to print) and the closest match of each unknown key."""
    known = sorted(set(known))
    unknown = sorted(set(given) - set(known))
    if unknown:
        hints = {k: difflib.get_close_matches(k, known, n=1) for k in unknown}
        hint = "; ".join(f"did you mean {h[0]!r} for {k!r}?" for k, h in hints.items() if h)
        raise ValueError(f"{where}: unknown key(s) {unknown}; expected {expected or 'some of: ' + ', '.join(known)}"
                         + (f" ({hint})" if hint else ""))


def _build_component(registry, spec, field: str, extra: Optional[dict] = None):
    """Build ``spec`` (a name or ``{name: .., **options}``) from ``registry`` as the trainer
    does, with ``field`` in every error message."""
    from atwu_plugin.trainers.config import spec_name

    name, kwargs = spec_name(spec, field)
    cls = registry.get(name)  # UnknownNameError: lists the known names
    params = _accepted_params(cls)
    _unknown_keys(f"method_args.{field} ({registry.kind} {name!r})", kwargs, params)
    # host-supplied values (e.g. the tokenizer's mask id) fill parameters left unset or null
    kwargs = {**kwargs, **{k: v for k, v in (extra or {}).items() if k in params and kwargs.get(k) is None}}
    try:
        return cls(**kwargs)
    except ValueError as err:
        raise ValueError(f"method_args.{field}: {err}") from None
    except TypeError as err:
        raise ValueError(f"method_args.{field} ({registry.kind} {name!r}): {err}") from None


def validate_trainer_config(cfg: dict, source: str = "trainer config") -> dict:
    """Check a lite/OU trainer config (``handler``, ``method_args``, ``args``) without
    building a trainer or loading a model; returns ``cfg`` unchanged.

    Unknown handler / forget loss / weighter / retain loss names raise ``UnknownNameError``
    listing the known ones; unknown keys and out-of-range values raise ``ValueError`` naming
    ``method_args.<field>`` (or ``args.<field>``), the value and the expected range."""
    from atwu_plugin.hosts.components import trainer_class
    from atwu_plugin.trainers.nonfinite import MODES as NONFINITE_MODES

    handler = cfg.get("handler")
    if not isinstance(handler, str) or not handler:
        raise ValueError(f"{source}: field 'handler' must be a trainer class name, got {handler!r}")
    cls = trainer_class(handler)
    method_args = dict(cfg.get("method_args") or {})
    _validate_training_args(cfg.get("args") or {})

    mode = method_args.get("on_nonfinite", "stop")
    if mode not in NONFINITE_MODES:
        raise ValueError(f"method_args.on_nonfinite={mode!r}: expected one of {', '.join(NONFINITE_MODES)}")
    if not cls.__module__.startswith("atwu_plugin."):
        return cfg  # a third-party trainer: its own constructor validates its arguments

    from transformers import Trainer

    from atwu_plugin.losses.forget import FORGET_LOSSES
    from atwu_plugin.losses.reduce import check_normalizer
    from atwu_plugin.losses.retain import RETAIN_LOSSES
    from atwu_plugin.trainers.token_weighted import TokenWeightedUnlearn
    from atwu_plugin.weighting import WEIGHTERS

    known = set(HOST_METHOD_ARGS)
    for klass in cls.__mro__:
        if klass is Trainer or not issubclass(klass, Trainer):
            break
        if "__init__" in vars(klass):
            known |= set(_init_params(klass)) - {"evaluators", "template_args", "model_loader"}  # host-given
    # a method built around one weighter (ATWU) takes its options flat and ignores a weighter
    fixed = getattr(cls, "fixed_weighter", None)
    fixed_keys = set(_init_params(WEIGHTERS.get(fixed))) if fixed else set()
    if fixed:
        known |= fixed_keys | {"weighter"}
    _unknown_keys(f"method_args of {handler}", method_args, known)
    if fixed:  # its own message names the field ("ATWU method_args.rho=1.5: expected ...")
        from atwu_plugin.trainers.config import plain

        WEIGHTERS.build(fixed, **{k: plain(v) for k, v in method_args.items() if k in fixed_keys})

    if not issubclass(cls, TokenWeightedUnlearn):
        return cfg
    if method_args.get("peft") is not None:  # LoRA spec: preset name / fields, before any model loads
        from atwu_plugin.trainers.adapters import adapter_spec

        adapter_spec(method_args["peft"])
    defaults = {n: p.default for n, p in _init_params(cls).items()}
    defaults.update({n: p.default for n, p in _init_params(TokenWeightedUnlearn).items() if n not in defaults})
    normalizer = method_args.get("normalizer", defaults.get("normalizer", "batch_tokens"))
    if "normalizer" in method_args:
        try:
            check_normalizer(normalizer)
        except ValueError as err:
            raise ValueError(f"method_args.normalizer: {err}") from None
    forget = method_args.get("forget_loss") or defaults.get("forget_loss", "ga")
    _build_component(FORGET_LOSSES, forget, "forget_loss", {"normalizer": normalizer})
    if not fixed:
        _build_component(WEIGHTERS, method_args.get("weighter", defaults.get("weighter", "uniform")),
                         "weighter", {"mask_token_id": 0})  # the trainer fills in the tokenizer's id
    _build_component(RETAIN_LOSSES, method_args.get("retain_loss", defaults.get("retain_loss", "nll")),
                     "retain_loss")
    for key in ("gamma", "alpha"):
        if key in method_args:
            check_number("method_args", key, method_args[key], low=0)
    return cfg


def _validate_training_args(args: dict) -> None:
    from transformers import TrainingArguments

    if not isinstance(args, dict):
        raise ValueError(f"args: expected a mapping of TrainingArguments, got {type(args).__name__}")
    _unknown_keys("args", args, [f.name for f in dataclasses.fields(TrainingArguments) if f.init],
                  expected="fields of transformers.TrainingArguments")
    for key, rng in _ARG_RANGES.items():
        if args.get(key) is not None:
            check_number("args", key, args[key], **rng)


def make_benchmark(name: str, options: Optional[dict] = None):
    """``get_benchmark(name, **options)`` with unknown options named and the known ones
    listed (instead of a constructor ``TypeError``)."""
    from atwu_plugin.tasks import BENCHMARKS, get_benchmark

    options = dict(options or {})
    try:
        return get_benchmark(name, **options)
    except TypeError:
        known = _accepted_params(BENCHMARKS.get(name))
        unknown = sorted(set(options) - set(known))
        if not unknown:
            raise
        raise ValueError(f"benchmark {name}: unknown option(s) {', '.join('benchmark.' + k for k in unknown)}; "
                         f"expected some of: {', '.join('benchmark.' + k for k in known)}") from None


def check_max_positions(model, datasets: dict) -> None:
    """Every sample fits the model's positions (``config.max_position_embeddings``): a longer
    one would run past the positions the model was trained on (RoPE models do not fail, they
    silently produce garbage there). ``ValueError`` naming the sample and the fix otherwise."""
    max_pos = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if not isinstance(max_pos, int):
        return
    for name, ds in datasets.items():
        lengths = [len(ds[i]["input_ids"]) for i in range(len(ds))]
        if lengths and max(lengths) > max_pos:
            i = max(range(len(lengths)), key=lengths.__getitem__)
            n_over = sum(n > max_pos for n in lengths)
            raise ValueError(
                f"{name} dataset: sample {i} has {lengths[i]} tokens ({n_over} sample(s) longer than the model's "
                f"{max_pos} positions, config.max_position_embeddings={max_pos}); lower the benchmark's max_length "
                f"option to {max_pos} or less (benchmark.max_length={max_pos}), or use a model with more positions")
