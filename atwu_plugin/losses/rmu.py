"""RMU's two terms on one layer's hidden states (Li et al., 2024, "The WMDP Benchmark", Representation
Misdirection for Unlearning), pure PyTorch.

    forget:  mean over forget tokens of  ||h_t - c u||^2 / d     (push activations to a fixed random direction)
    retain:  mean over retain tokens of  ||h_t - h0_t||^2 / d    (keep them where the frozen model has them)

``u`` is a fixed random unit vector, ``c`` the steering coefficient, ``h0`` the frozen initial
model's activations, ``d`` the hidden size (the paper's ``mse_loss``: a mean over elements).
Only token positions in ``mask`` count (the paper averages over every position of its
fixed-length batches; with padding, the masked mean is the same quantity on the real tokens).
"""

import torch


def masked_mse(h: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the ``mask`` positions of the per-token mean squared difference; ``target``
    broadcasts (``[d]`` or ``[B, T, d]``). 0 when the mask is empty."""
    per_token = (h.float() - target.float()).pow(2).mean(-1)  # [B, T]
    m = mask.to(per_token.dtype)
    return (per_token * m).sum() / m.sum().clamp_min(1)


def random_control_vector(hidden_size: int, seed: int, dtype=torch.float32) -> torch.Tensor:
    """The paper's ``u``: uniform [0, 1) entries, normalised to unit length; from its own
    generator (the seed fixes it; no draw from torch's global RNG)."""
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(hidden_size, generator=g, dtype=torch.float32)
    return (u / u.norm()).to(dtype)


def rmu_forget_loss(h: torch.Tensor, control: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return masked_mse(h, control, mask)


def rmu_retain_loss(h: torch.Tensor, h_frozen: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return masked_mse(h, h_frozen.detach(), mask)
