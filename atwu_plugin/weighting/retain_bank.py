"""A bank of retain answer-token features ``(h_s, sketch(e_s), y_s)`` (pure torch).

Retain conflict is measured against individual retain tokens (docs/atwu.md, "1. Per-token retain conflict"), so the bank must
cover the retain set evenly: ``refresh`` draws a uniform sample of tokens across all the
batches it is given, by bottom-k sampling (every token gets a random key, the ``capacity``
smallest keys are kept). This is exact uniform sampling without replacement, streams over
any number of batches with ``capacity`` rows of memory, and is deterministic for a seed.

Memory (docs/scaling.md, "ATWU's extra memory per rank"): the rows live in buffers that are
allocated once and then written in place. ``add`` appends into the free rows while there are
any; once the bank is full it selects the survivors by key, compacts the old ones towards the
front in chunks of ``CHUNK`` rows and writes the new ones after them, so an ``add`` needs only
the new rows and one chunk on top of the bank (the earlier ``torch.cat`` version held the
bank up to three times over: the old rows, the concatenation and the selected copy). The
rows are the same, in the same order, as that version's (tested), so every conflict is
bit-identical. ``refresh`` and ``clear`` keep the buffers (a refreshed bank is rebuilt in
place); ``reserve`` preallocates, ``refresh`` trims to the rows it filled. Cosines normalize
rows chunk by chunk (``normalized``), so no unit-norm copy of the bank is kept.

Storage precision (``dtype``): float32 keeps the raw features. float16/bfloat16 (dense
sketches only; the top-k sketch packs token indices in its floats) store each row as its
unit direction in that precision plus its float32 norm: a cosine needs only the direction,
whose entries lie in [-1, 1] (no underflow of tiny ``e`` of confident tokens, no overflow),
and the raw row is ``norm * direction`` for the ablations that want it. Per row:
``(H + d) * bytes`` plus 8 bytes of norms (half precision), an int64 id and a float32 key.
"""

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F

CHUNK = 1024  # rows moved at a time when compacting; the conflict reads the bank in such chunks
_EPS = 1e-12
STORAGE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class RetainFeatureBank:
    def __init__(self, capacity: int, sketch, seed: int = 0, dtype: torch.dtype = torch.float32):
        self.capacity, self.sketch, self.seed = capacity, sketch, seed
        # the sparse top-k sketch stores token indices as floats: exact only in float32
        self.dtype = dtype if getattr(sketch, "dense", False) else torch.float32
        self.n_refreshes = 0
        self._gen = torch.Generator().manual_seed(seed)
        self._buffers: dict[str, torch.Tensor] = {}  # e, h, token_ids, keys (+ e_norm, h_norm)
        self._n = 0
        self.n_seen = 0
        self._expected_rows = 0  # a size hint for the first allocation of a refresh

    @property
    def scaled(self) -> bool:
        """Rows stored as float32 norm x low-precision unit direction."""
        return self.dtype != torch.float32

    def __len__(self) -> int:
        return self._n

    def clear(self) -> None:
        """Empty the bank; its buffers stay allocated for the next fill."""
        self._n, self.n_seen = 0, 0

    # ---- buffers -------------------------------------------------------------------------
    def _allocated_rows(self) -> int:
        return self._buffers["keys"].shape[0] if self._buffers else 0

    def _resize(self, rows: int, e_dim: int, h_dim: int, device) -> None:
        """(Re)allocate the buffers for ``rows`` rows, keeping the first ``len(self)``."""
        shapes = {"e": (rows, e_dim), "h": (rows, h_dim), "token_ids": (rows,), "keys": (rows,)}
        dtypes = {"e": self.dtype, "h": self.dtype, "token_ids": torch.long, "keys": torch.float32}
        if self.scaled:
            shapes.update(e_norm=(rows,), h_norm=(rows,))
            dtypes.update(e_norm=torch.float32, h_norm=torch.float32)
        old, self._buffers = self._buffers, {}
        for name, shape in shapes.items():
            buf = torch.empty(shape, dtype=dtypes[name], device=device)
            if name in old and self._n:
                buf[: self._n] = old[name][: self._n]
            self._buffers[name] = buf
            old.pop(name, None)  # free each old buffer as soon as it is copied

    def _ensure_rows(self, rows: int, e_dim: int, h_dim: int, device) -> None:
        have = self._allocated_rows()
        if have and (self._buffers["e"].shape[1], self._buffers["h"].shape[1]) != (e_dim, h_dim):
            raise ValueError(
                f"retain bank rows have widths (e {self._buffers['e'].shape[1]}, h {self._buffers['h'].shape[1]}),"
                f" new features have (e {e_dim}, h {h_dim})"
            )
        if rows > have:  # grow geometrically: few reallocations while a bank fills from empty
            self._resize(min(self.capacity, max(rows, 2 * have, self._expected_rows)), e_dim, h_dim, device)

    def reserve(self, rows: int, like: "RetainFeatureBank") -> None:
        """Preallocate ``rows`` rows (at most ``capacity``) shaped like ``like``'s, so filling
        this bank later allocates nothing (the filling bank reserves the active bank's size)."""
        if like._allocated_rows():
            e, h = like._buffers["e"], like._buffers["h"]
            self._ensure_rows(min(rows, self.capacity), e.shape[1], h.shape[1], h.device)

    def _trim(self) -> None:
        if self._n < self._allocated_rows():
            e, h = self._buffers["e"], self._buffers["h"]
            self._resize(self._n, e.shape[1], h.shape[1], h.device)

    def _encode(self, e: torch.Tensor, h: torch.Tensor) -> dict:
        e, h = e.float(), h.float()
        if not self.scaled:
            return {"e": e, "h": h}
        e_norm, h_norm = e.norm(dim=-1), h.norm(dim=-1)
        return {
            "e": (e / e_norm.clamp_min(_EPS)[:, None]).to(self.dtype), "e_norm": e_norm,
            "h": (h / h_norm.clamp_min(_EPS)[:, None]).to(self.dtype), "h_norm": h_norm,
        }

    def _write(self, start: int, rows: dict, select=None) -> None:
        for name, value in rows.items():
            value = value if select is None else value[select]
            self._buffers[name][start : start + value.shape[0]] = value

    def _compact(self, keep: torch.Tensor) -> None:
        """Move rows ``keep`` (ascending) to the front, in order, in place. Chunk by chunk: the
        destinations ``[a, a + CHUNK)`` lie at or before their sources (``keep[j] >= j``), and
        later chunks read rows at or after ``a + CHUNK``, which this chunk does not write."""
        moved = (keep != torch.arange(keep.shape[0], device=keep.device)).nonzero()
        if moved.numel() == 0:
            return
        for a in range(int(moved[0, 0]), keep.shape[0], CHUNK):
            src = keep[a : a + CHUNK]
            for buf in self._buffers.values():
                buf[a : a + src.shape[0]] = buf[src]

    # ---- filling -------------------------------------------------------------------------
    @torch.no_grad()
    def add(self, e: torch.Tensor, h: torch.Tensor, token_ids: torch.Tensor) -> None:
        """Offer tokens to the bank; it keeps a uniform sample of everything offered since the
        last ``refresh`` (keys are drawn on CPU from the bank's own generator: reproducible
        regardless of device)."""
        keys = torch.rand(h.shape[0], generator=self._gen).to(h.device)
        self.n_seen += h.shape[0]
        new = {**self._encode(e, h), "token_ids": token_ids.long(), "keys": keys}
        n, k = self._n, h.shape[0]
        self._ensure_rows(min(self.capacity, n + k), new["e"].shape[1], new["h"].shape[1], h.device)
        if n + k <= self.capacity:
            self._write(n, new)
            self._n = n + k
            return
        # the ``capacity`` smallest keys of (old rows, then new rows), in that order
        keep = torch.cat([self._buffers["keys"][:n], keys]).topk(self.capacity, largest=False).indices.sort().values
        old_keep, new_keep = keep[keep < n], keep[keep >= n] - n
        self._compact(old_keep)
        self._write(old_keep.shape[0], new, select=new_keep)
        self._n = self.capacity

    @torch.no_grad()
    def refresh(self, batches_iter: Iterable, feature_fn: Callable, expected_rows: int = 0) -> None:
        """Rebuild from scratch (in place): ``feature_fn(batch)`` returns
        ``OutputGradFeatures`` (or any object with ``e``, ``h``, ``token_ids``) of a retain
        batch's answer tokens. The k-th refresh reseeds with ``(seed, k)``, so two banks with
        the same seed and history hold the same tokens, while successive refreshes draw fresh
        samples. A bank filled from batches is trimmed to the rows it holds. ``expected_rows``
        (e.g. the retain set's answer tokens) sizes the first allocation, so a bank filled from
        empty is allocated once instead of grown by copies (a wrong hint costs only memory)."""
        self.clear()
        self._expected_rows = min(self.capacity, expected_rows)
        self._gen.manual_seed(self.seed * 1_000_003 + self.n_refreshes)
        self.n_refreshes += 1
        filled = False
        for batch in batches_iter:
            f = feature_fn(batch)
            self.add(f.e, f.h, f.token_ids)
            filled = True
        self._expected_rows = 0
        if filled:
            self._trim()

    # ---- reading -------------------------------------------------------------------------
    def _get(self, name: str, rows=slice(None)) -> torch.Tensor:
        """Rows of a buffer, restricted to the filled part (a view for a slice)."""
        buf = self._buffers[name][: self._n] if self._buffers else torch.zeros(0)
        return buf[rows]

    def rows(self, rows=slice(None)):
        """Raw float32 ``(e, h)`` of ``rows`` (a slice or an index tensor)."""
        e, h = self._get("e", rows).float(), self._get("h", rows).float()
        if self.scaled:
            e, h = e * self._get("e_norm", rows)[:, None], h * self._get("h_norm", rows)[:, None]
        return e, h

    def normalized(self, rows=slice(None)):
        """Unit-norm ``(e_hat, h_hat)`` of ``rows`` (a slice or an index tensor), for cosines.
        Computed on every call, not cached: a cached copy would double the bank's memory, and
        normalizing a chunk costs O(chunk * (H + d)) next to the O(N * chunk * (H + d)) Gram."""
        return self.sketch.normalize(self._get("e", rows).float()), self.normalized_h(rows)

    def normalized_h(self, rows=slice(None)) -> torch.Tensor:
        return F.normalize(self._get("h", rows).float(), dim=-1, eps=_EPS)

    @property
    def e(self) -> torch.Tensor:
        return self.rows()[0]

    @property
    def h(self) -> torch.Tensor:
        return self.rows()[1]

    @property
    def token_ids(self) -> torch.Tensor:
        return self._get("token_ids") if self._buffers else torch.zeros(0, dtype=torch.long)

    @property
    def keys(self) -> torch.Tensor:
        return self._get("keys")

    def memory_floats(self) -> int:
        if not self._buffers:
            return 0
        return self.capacity * (self._buffers["h"].shape[1] + self._buffers["e"].shape[1])

    def memory_bytes(self) -> int:
        """Bytes of the allocated buffers (all rows, filled or not)."""
        return sum(b.numel() * b.element_size() for b in self._buffers.values())

    def to(self, device) -> "RetainFeatureBank":
        self._buffers = {k: v.to(device) for k, v in self._buffers.items()}
        return self

    # ---- checkpoints ---------------------------------------------------------------------
    def state_dict(self) -> dict:
        sd = {
            "capacity": self.capacity,
            "seed": self.seed,
            "n_refreshes": self.n_refreshes,
            "n_seen": self.n_seen,
            "generator": self._gen.get_state(),
        }
        if self._buffers:  # the stored form: a resumed bank holds bit-identical rows
            sd.update({k: self._get(k).clone() for k in self._buffers})
        return sd

    def load_state_dict(self, sd: dict) -> None:
        """The sketch is configuration, not state (a random projection is regenerated from its
        seed): build the bank with the same sketch (and storage dtype) before loading."""
        dim = getattr(self.sketch, "dim", None)
        if "e" in sd and dim is not None and sd["e"].shape[1] != dim:
            raise ValueError(
                f"checkpointed bank has sketch width {sd['e'].shape[1]}, this bank's sketch has {dim}"
            )
        if "e" in sd and (sd["e"].dtype != self.dtype or ("e_norm" in sd) != self.scaled):
            raise ValueError(
                f"checkpointed bank is stored as {sd['e'].dtype}, this bank stores {self.dtype}; "
                "resume with the same state_dtype"
            )
        self.capacity, self.seed, self.n_refreshes = sd["capacity"], sd["seed"], sd["n_refreshes"]
        self._gen.set_state(sd["generator"])
        self._buffers, self._n = {}, 0
        if "h" in sd:
            names = ("e", "h", "token_ids", "keys") + (("e_norm", "h_norm") if self.scaled else ())
            self._buffers = {k: sd[k].clone() for k in names}
            self._n = sd["h"].shape[0]
        self.n_seen = sd.get("n_seen", len(self))
