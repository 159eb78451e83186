"""Train only the top decoder layers of a causal LM (the rest frozen as loaded)."""

import torch


def decoder_layers(model: torch.nn.Module):
    """The decoder's layer list of a Llama-style model (``model.model.layers``)."""
    layers = getattr(getattr(model, "model", None), "layers", None)
    if layers is None:
        raise ValueError(f"{type(model).__name__}: no decoder layers at model.model.layers; training only the top "
                         "layers needs a Llama-style causal LM")
    return layers


def train_only_top_layers(model: torch.nn.Module, n: int) -> int:
    """Freeze every parameter but those of the top ``n`` decoder layers and the final norm.

    A tied output head stays frozen with the input embedding. Below the lowest trained layer no
    activation needs a gradient, so autograd records nothing there: the frozen layers cost a
    forward pass only. Returns the number of trainable parameters."""
    layers = decoder_layers(model)
    if not isinstance(n, int) or not 1 <= n <= len(layers):
        raise ValueError(f"top_layers={n!r}: expected an integer in 1..{len(layers)} (the model has "
                         f"{len(layers)} decoder layers)")
    model.requires_grad_(False)
    trained = list(layers[-n:]) + [m for m in (getattr(model.model, "norm", None),) if m is not None]
    for module in trained:
        module.requires_grad_(True)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
