"""RWKU torch datasets: probes as supervised QA items, forget passages as LM windows.

torch is imported lazily (in ``__getitem__``), so importing the RWKU loaders stays light.
"""

from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple

from atwu_plugin.data.rwku_prompts import probe_prompt
from atwu_plugin.data.rwku_records import Probe


class RWKUProbeDataset:
    """Probes as supervised QA items in the plugin's format.

    Each item is ``encode_qa(tokenizer, template_args, question, answer, max_length)
    .as_item(index)`` from ``atwu_plugin.data.encoding`` (``input_ids``, ``labels`` on the answer
    only, ``attention_mask``, ``token_kind`` (no span labels: answer tokens are "ignore"),
    ``index`` = position in this dataset). ``question`` is the probe's user message
    from :func:`probe_prompt`. ``encode_qa`` cannot put text after the assistant tag, so in
    ``"rwku"`` style the assistant prefix ends the question instead (``"...\\nAnswer:"``);
    the default ``"plain"`` style uses the bare query."""

    def __init__(
        self,
        probes: Sequence[Probe],
        tokenizer,
        template_args: Dict[str, Any],
        max_length: int = 512,
        prompt_style: str = "plain",
    ):
        self.probes = list(probes)
        self.tokenizer = tokenizer
        self.template_args = template_args
        self.max_length = max_length
        if prompt_style not in ("plain", "rwku"):
            raise ValueError(f"unknown probe prompt style {prompt_style!r}; expected 'rwku' or 'plain'")
        self.prompt_style = prompt_style

    def __len__(self) -> int:
        return len(self.probes)

    def question(self, i: int) -> str:
        user, prefix = probe_prompt(self.probes[i], self.prompt_style)
        return user + prefix if prefix else user

    def __getitem__(self, i: int) -> Dict[str, Any]:
        from atwu_plugin.data.encoding import encode_qa  # lazy: written alongside this module

        if not 0 <= i < len(self.probes):
            raise IndexError(i)
        question, answer = self.question(i), self.probes[i].answer
        enc = encode_qa(self.tokenizer, self.template_args, question, answer, self.max_length)
        if hasattr(enc, "as_item"):  # EncodedQA
            return enc.as_item(i)
        return {**dict(enc), "index": i}


class RWKUTextDataset:
    """Pretraining-style items over a text corpus (the forget passages).

    Each text is tokenized with the tokenizer's special tokens (BOS) and, if ``add_eos``, an EOS,
    then cut into windows of at most ``max_length`` tokens that overlap by one token, so every
    token after the first BOS is a target in exactly one window (position 0 of a window is never
    a target; see ``atwu_plugin.losses.tokens``). Items: ``input_ids``, ``labels`` (= input_ids,
    ``-100`` at position 0), ``attention_mask`` (ones), ``index`` (window number), ``text_index``
    (which text). Windows of a single token (nothing to predict) are dropped."""

    def __init__(self, texts: Sequence[str], tokenizer, max_length: int = 512, add_eos: bool = False):
        if max_length < 2:
            raise ValueError(f"max_length must be >= 2, got {max_length}")
        self.texts = list(texts)
        self.max_length = max_length
        self.windows: List[Tuple[int, List[int]]] = []
        step = max_length - 1
        for ti, text in enumerate(self.texts):
            ids = list(tokenizer(text, add_special_tokens=True)["input_ids"])
            if add_eos and tokenizer.eos_token_id is not None:
                ids.append(tokenizer.eos_token_id)
            for start in range(0, max(len(ids) - 1, 1), step):
                chunk = ids[start : start + max_length]
                if len(chunk) >= 2:
                    self.windows.append((ti, chunk))

    def __len__(self) -> int:
        return len(self.windows)

    def num_tokens(self) -> int:
        """Target tokens over the corpus (each counted once)."""
        return sum(len(c) - 1 for _, c in self.windows)

    def __getitem__(self, i: int) -> Dict[str, Any]:
        from atwu_plugin.data.lm_items import lm_item  # imports torch

        ti, chunk = self.windows[i]
        return {**lm_item(chunk), "index": i, "text_index": ti}
