"""Words of an answer from its token ids (pure python), for word-level weighters.

A *unit* is a word (a maximal run of letters and digits, case-folded), one punctuation
character, or a token without visible text (a whitespace-only or special token, keyed by its
id). Words are delimited by whitespace and punctuation: ``" Yun-Hwa's"`` is the units
``yun``, ``-``, ``hwa``, ``'``, ``s``. A token belongs to the unit of its first visible
character, so every piece of a multi-token word (``" Hs" + "iao"``) gets that word.

The text of each token comes from ``token_text(id)`` (``WeighterSetup.token_text``): the
token's decoded piece with a leading space when it starts a word (byte-level BPE ``"Ġ"``,
SentencePiece ``"▁"``), ``""`` for special tokens. :func:`token_text_of` builds it from a
Hugging Face tokenizer.
"""

import functools
from typing import Callable, List, Sequence, Tuple

_WORD_MARKERS = ("\u0120", "\u2581")  # "Ġ" (byte-level BPE), "▁" (SentencePiece): a space before the piece


def token_text_of(tokenizer) -> Callable[[int], str]:
    """``token_text`` for a Hugging Face tokenizer (cached per id; only ids asked for are decoded)."""
    special = set(getattr(tokenizer, "all_special_ids", ()) or ())

    @functools.lru_cache(maxsize=None)
    def token_text(token_id: int) -> str:
        if token_id in special:
            return ""
        piece = tokenizer.convert_ids_to_tokens(int(token_id))
        if not piece:
            return ""
        text = tokenizer.convert_tokens_to_string([piece])
        if piece.startswith(_WORD_MARKERS) and not text[:1].isspace():
            text = " " + text  # SentencePiece decoders drop the space of a lone piece
        return text

    return token_text


def word_units(ids: Sequence[int], token_text: Callable[[int], str]) -> Tuple[List[int], List[str]]:
    """Units of the token sequence ``ids`` (module doc): ``(unit index of every token, unit keys)``."""
    units: List[str] = []
    of_token: List[int] = []
    word_open = False  # the last unit is a word that the next letter/digit continues
    for token_id in ids:
        first = None  # the unit of this token's first visible character
        for ch in token_text(int(token_id)):
            if ch.isspace():
                word_open = False
                continue
            if ch.isalnum():
                if word_open:
                    units[-1] += ch.casefold()
                else:
                    units.append(ch.casefold())
                    word_open = True
            else:  # punctuation (and "_"): a unit of its own, ends the word
                units.append(ch)
                word_open = False
            if first is None:
                first = len(units) - 1
        if first is None:  # no visible text: the token is its own unit
            units.append(f"<{int(token_id)}>")
            word_open = False
            first = len(units) - 1
        of_token.append(first)
    return of_token, units


def unit_contexts(units: Sequence[str], half_width: int) -> List[Tuple[str, ...]]:
    """The ``2 * half_width + 1`` units centred on each unit, padded with ``"<a>"`` / ``"</a>"``
    past the answer's ends."""
    padded = ["<a>"] * half_width + list(units) + ["</a>"] * half_width
    return [tuple(padded[i : i + 2 * half_width + 1]) for i in range(len(units))]
