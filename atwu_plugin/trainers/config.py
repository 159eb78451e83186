"""Small helpers to read method arguments that arrive as str, dict or OmegaConf nodes."""

from typing import Any, Tuple


def plain(value: Any) -> Any:
    """OmegaConf containers -> plain Python (so pure-torch modules never see DictConfig)."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(value, (DictConfig, ListConfig)):
            return OmegaConf.to_container(value, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        pass
    return value


def spec_name(spec: Any, field: str) -> Tuple[str, dict]:
    """``"npo"`` or ``{"name": "npo", "beta": 0.1}`` -> ``("npo", {"beta": 0.1})``."""
    spec = plain(spec)
    if isinstance(spec, str):
        return spec, {}
    if isinstance(spec, dict) and isinstance(spec.get("name"), str):
        kwargs = dict(spec)
        return kwargs.pop("name"), kwargs
    raise ValueError(f"method_args.{field}: expected a name or a mapping with a 'name' key, got {spec!r}")
