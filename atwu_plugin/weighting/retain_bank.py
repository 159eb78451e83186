"""A bank of retain answer-token features ``(h_s, sketch(e_s), y_s)`` (pure torch).

Retain conflict is measured against individual retain tokens (ATWU.md), so the bank must
cover the retain set evenly: ``refresh`` draws a uniform sample of tokens across all the
batches it is given, by bottom-k sampling (every token gets a random key, the ``capacity``
smallest keys are kept). This is exact uniform sampling without replacement, streams over
any number of batches with ``capacity`` rows of memory, and is deterministic for a seed.
Memory: ``capacity * (H + d)`` floats plus an id and a key per row; cosines normalize the
rows chunk by chunk (``normalized``), so no unit-norm copy of the bank is kept.
"""

from collections.abc import Callable, Iterable

import torch


class RetainFeatureBank:
    def __init__(self, capacity: int, sketch, seed: int = 0):
        self.capacity, self.sketch, self.seed = capacity, sketch, seed
        self.n_refreshes = 0
        self._gen = torch.Generator().manual_seed(seed)
        self._clear()

    def _clear(self):
        self.h: torch.Tensor | None = None
        self.e: torch.Tensor | None = None
        self.token_ids: torch.Tensor | None = None
        self.keys: torch.Tensor | None = None
        self.n_seen = 0

    def __len__(self) -> int:
        return 0 if self.h is None else self.h.shape[0]

    @torch.no_grad()
    def add(self, e: torch.Tensor, h: torch.Tensor, token_ids: torch.Tensor) -> None:
        """Offer tokens to the bank; it keeps a uniform sample of everything offered since the
        last ``refresh`` (keys are drawn on CPU from the bank's own generator: reproducible
        regardless of device)."""
        keys = torch.rand(h.shape[0], generator=self._gen).to(h.device)
        self.n_seen += h.shape[0]
        e, h, token_ids = e.float(), h.float(), token_ids.long()
        if self.h is not None:
            e, h = torch.cat([self.e, e]), torch.cat([self.h, h])
            token_ids, keys = torch.cat([self.token_ids, token_ids]), torch.cat([self.keys, keys])
        if keys.shape[0] > self.capacity:
            keep = keys.topk(self.capacity, largest=False).indices.sort().values
            e, h, token_ids, keys = e[keep], h[keep], token_ids[keep], keys[keep]
        self.e, self.h, self.token_ids, self.keys = e, h, token_ids, keys

    @torch.no_grad()
    def refresh(self, batches_iter: Iterable, feature_fn: Callable) -> None:
        """Rebuild from scratch: ``feature_fn(batch)`` returns ``OutputGradFeatures`` (or any
        object with ``e``, ``h``, ``token_ids``) of a retain batch's answer tokens. The k-th
        refresh reseeds with ``(seed, k)``, so two banks with the same seed and history hold
        the same tokens, while successive refreshes draw fresh samples."""
        self._clear()
        self._gen.manual_seed(self.seed * 1_000_003 + self.n_refreshes)
        self.n_refreshes += 1
        for batch in batches_iter:
            f = feature_fn(batch)
            self.add(f.e, f.h, f.token_ids)

    def normalized(self, rows=slice(None)):
        """Unit-norm ``(e_hat, h_hat)`` of ``rows`` (a slice or an index tensor), for cosines.
        Computed on every call, not cached: a cached copy would double the bank's memory, and
        normalizing a chunk costs O(chunk * (H + d)) next to the O(N * chunk * (H + d)) Gram."""
        return (
            self.sketch.normalize(self.e[rows]),
            torch.nn.functional.normalize(self.h[rows], dim=-1, eps=1e-12),
        )

    def memory_floats(self) -> int:
        return 0 if self.h is None else self.capacity * (self.h.shape[1] + self.e.shape[1])

    def to(self, device) -> "RetainFeatureBank":
        if self.h is not None:
            self.e, self.h = self.e.to(device), self.h.to(device)
            self.token_ids, self.keys = self.token_ids.to(device), self.keys.to(device)
        return self

    def state_dict(self) -> dict:
        sd = {
            "capacity": self.capacity,
            "seed": self.seed,
            "n_refreshes": self.n_refreshes,
            "n_seen": self.n_seen,
            "generator": self._gen.get_state(),
        }
        if self.h is not None:
            sd.update(e=self.e, h=self.h, token_ids=self.token_ids, keys=self.keys)
        return sd

    def load_state_dict(self, sd: dict) -> None:
        """The sketch is configuration, not state (a random projection is regenerated from its
        seed): build the bank with the same sketch before loading."""
        dim = getattr(self.sketch, "dim", None)
        if "e" in sd and dim is not None and sd["e"].shape[1] != dim:
            raise ValueError(
                f"checkpointed bank has sketch width {sd['e'].shape[1]}, this bank's sketch has {dim}"
            )
        self.capacity, self.seed, self.n_refreshes = sd["capacity"], sd["seed"], sd["n_refreshes"]
        self._gen.set_state(sd["generator"])
        self._clear()
        if "h" in sd:
            self.e, self.h, self.token_ids, self.keys = sd["e"], sd["h"], sd["token_ids"], sd["keys"]
        self.n_seen = sd.get("n_seen", len(self))
