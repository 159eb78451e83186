"""The token-weighter contract (pure torch).

A weighter maps a batch and the model outputs to weights ``w[b, t] >= 0`` aligned with
``labels`` (see ``atwu_plugin.losses.tokens``), zero on prompt/padding/position 0, and
detached from the LM graph. Weighters declare in ``needs`` which optional inputs they
read, so the trainer computes only those (hidden states, reference logits, ...).

Every hook but ``compute`` is optional (a no-op by default), and the trainer calls each
the same way for every weighter:

* ``setup(WeighterSetup)``: once before training (retain statistics, caches, pre-fits);
* ``update(inputs)``: every step, before ``compute``, with the step's forget batch and
  outputs: a weighter that learns while the model unlearns takes its own step here (ATWU's
  scorer, alternating with the LM step);
* ``observe_retain(inputs)``: every step with a retain loss, the retain batch and its outputs
  (only when ``"retain_hidden_states"`` is in ``needs``; ATWU streams them into its bank);
* ``reference_logp(inputs)``: the frozen initial model's log-probs of the forget batch from
  a cache (``caches_reference_logp``), so the trainer needs no reference forward for them;
* ``state_dict()``: state saved with every checkpoint as ``<checkpoint_name>.safetensors``
  (+ ``.json``) when ``checkpoint_name`` is set; on resume ``setup`` gets it back as
  ``WeighterSetup.saved_state`` (so a weighter with state implements ``setup``).
"""

from dataclasses import dataclass, fields
from typing import Any, Callable, Iterable, Mapping, Optional

import torch

from atwu_plugin.registry import WEIGHTERS


@dataclass
class WeightingInputs:
    input_ids: torch.Tensor  # [B, T]
    labels: torch.Tensor  # [B, T], IGNORE_INDEX on prompt/padding
    logits: torch.Tensor  # [B, T, V] of the model being unlearned, current step
    attention_mask: Optional[torch.Tensor] = None  # [B, T]
    hidden_states: Optional[torch.Tensor] = None  # [B, T, H] last layer, model layout (not shifted)
    ref_logits: Optional[torch.Tensor] = None  # [B, T, V] frozen initial model ("ref_logits")
    aux_logits: Optional[torch.Tensor] = None  # [B, T, V] auxiliary model that never saw the forget set
    token_kind: Optional[torch.Tensor] = None  # [B, T] ground-truth kinds (atwu_plugin.tokens)
    index: Optional[torch.Tensor] = None  # [B] dataset indices of the samples
    # callable(input_ids, attention_mask) -> logits [B, T, V]; for weighters that need extra
    # forward passes of the model being unlearned (e.g. masking-based importance).
    model: Optional[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = None
    step: int = 0
    # every layer's hidden states (embeddings first), [B, T, H] each, detached ("all_hidden_states")
    all_hidden_states: Optional[tuple] = None
    # rows of the output layer's weight W_out [V, H], indexed by token ids (``W[ids]``); may be a
    # lazy lookup of a sharded weight ("output_embedding")
    output_embedding: Any = None


@dataclass
class WeighterSetup:
    """What a weighter may read once before training (``TokenWeighter.setup``)."""

    vocab_size: int
    # iterable of collated retain batches (dicts with input_ids, labels, attention_mask)
    retain_batches: Optional[Iterable[dict]] = None
    # callable(input_ids, attention_mask) -> (logits [B,T,V], hidden [B,T,H]) of the initial model
    model: Optional[Callable] = None
    # -- for a setup over the whole data with every layer of the initial model (ATWU) --------
    hidden_size: Optional[int] = None
    n_layers: Optional[int] = None  # hidden-state tensors of the model: num_hidden_layers + 1
    # {"forget": dataset, "retain": dataset}: indexable tokenized items with "labels"
    datasets: Optional[Mapping[str, Any]] = None
    # split name -> this process's share of one ordered pass over it, as collated batches. Data
    # parallel: round k gives rank r batch k W + r, or a dummy batch without answer tokens, so
    # every rank runs the same number of forwards; results are combined with ``gather_rows``.
    batches: Optional[Callable[[str], Iterable[dict]]] = None
    # callable(batch) -> (logits [B,T,V], hidden states of every layer) of the initial model
    forward: Optional[Callable[[dict], tuple]] = None
    output_embedding: Any = None  # as ``WeightingInputs.output_embedding``
    # data parallel: this process's rank (None: one process) and an all-gather of a tensor's
    # rows over all ranks (identity in one process)
    rank: Optional[int] = None
    gather_rows: Callable[[torch.Tensor], torch.Tensor] = lambda t: t
    # resuming: what this weighter's ``state_dict()`` saved in the checkpoint (restore it
    # instead of recomputing the setup)
    saved_state: Optional[dict] = None
    # callable(token id) -> the token's text, with a leading space when it starts a word, "" for
    # special tokens (``weighting/words.py``; the host's tokenizer, for word-level weighters)
    token_text: Optional[Callable[[int], str]] = None


_INPUT_NAMES = frozenset(f.name for f in fields(WeightingInputs))


class TokenWeighter:
    """Base class. Subclasses implement ``compute`` and may override the optional hooks."""

    # optional inputs read: fields of WeightingInputs ("hidden_states", "all_hidden_states",
    # "ref_logits", "aux_logits", "token_kind", "model", "output_embedding"), and
    # "retain_hidden_states" (the trainer then calls ``observe_retain`` every step)
    needs: frozenset = frozenset()
    # False only for weighters that do not rank tokens (uniform): no span alignment to report
    ranks_tokens: bool = True
    # True: ``reference_logp`` serves the forget loss's reference log-probs from a cache
    caches_reference_logp: bool = False
    # file stem of ``state_dict()`` in every checkpoint (None: the weighter saves nothing)
    checkpoint_name: Optional[str] = None

    def setup(self, context: WeighterSetup) -> None:  # noqa: B027 - optional hook
        """Called once before training; default: nothing to prepare."""

    def update(self, inputs: WeightingInputs) -> None:  # noqa: B027 - optional hook
        """Called every step before ``compute``, under ``torch.no_grad`` like it (a weighter that
        fits parameters enables grad for them itself); default: nothing learned."""

    def compute(self, inputs: WeightingInputs) -> torch.Tensor:
        raise NotImplementedError

    def observe_retain(self, inputs: WeightingInputs) -> None:  # noqa: B027 - optional hook
        """The step's retain batch and its outputs (with ``"retain_hidden_states"`` in ``needs``)."""

    def reference_logp(self, inputs: WeightingInputs) -> Optional[torch.Tensor]:
        """Cached reference log-probs ``[B, T]`` of the forget batch (``caches_reference_logp``)."""
        return None

    def state_dict(self) -> dict:
        """What a checkpoint saves (with ``checkpoint_name``); restored via ``setup``."""
        return {}

    @torch.no_grad()
    def __call__(self, inputs: WeightingInputs) -> torch.Tensor:
        """One step: check the declared inputs, ``update``, then the weights of ``compute``
        (detached, float, zero off the answer tokens)."""
        from atwu_plugin.losses.tokens import answer_mask

        missing = [k for k in self.needs if k in _INPUT_NAMES and getattr(inputs, k) is None]
        if missing:
            raise ValueError(f"{type(self).__name__} needs {missing} but the trainer did not provide them")
        self.update(inputs)
        w = self.compute(inputs).detach().float()
        return w * answer_mask(inputs.labels)


register_weighter = WEIGHTERS.register


def masked_zscore(x: torch.Tensor, mask: torch.Tensor, per_sequence: bool = True, eps: float = 1e-6):
    """z-score of ``x [B, T]`` over the entries where ``mask`` is True, per sequence (each row
    its own mean/std) or over the whole batch; population std; 0 off the mask and for a group
    with no spread."""
    dims = -1 if per_sequence else (0, 1)
    m = mask.to(x.dtype)
    x = torch.where(mask, x, torch.zeros_like(x))  # off-mask values may be inf
    n = m.sum(dims, keepdim=True).clamp_min(1)
    centered = (x - x.sum(dims, keepdim=True) / n) * m
    std = (centered.pow(2).sum(dims, keepdim=True) / n).sqrt()
    return centered / (std + eps)
