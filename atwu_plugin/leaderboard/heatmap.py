"""Token-weight heatmaps: one self-contained HTML file per token-weighting method (no JS, inline CSS).

Input: the per-token records a token-weighting run logs (JSONL of ``{"sample", "tokens",
"weights", "kinds"}``, optionally ``step`` and ``text_tokens``).
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from atwu_plugin.evals.auroc import auroc
from atwu_plugin.leaderboard.results import ResultsError, is_number
from atwu_plugin.leaderboard.tables import format_value
from atwu_plugin.tokens import KIND_IGNORE, KIND_LABELS, KIND_NONE, KIND_SHARED, KIND_SPECIFIC, KIND_TEMPLATE
from atwu_plugin.utils.atomic import atomic_write_text


# white -> dark red (ColorBrewer "Reds", with pure white at 0)
_STOPS = ["#ffffff", "#fee0d2", "#fcbba1", "#fc9272", "#fb6a4a", "#ef3b2c", "#cb181d", "#a50f15"]


def _rgb(hexcolor: str) -> Tuple[int, int, int]:
    return tuple(int(hexcolor[i:i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


def weight_color(t: float) -> str:
    """Background for a normalized weight ``t`` in [0, 1]."""
    t = 0.0 if not math.isfinite(t) else min(max(t, 0.0), 1.0)
    pos = t * (len(_STOPS) - 1)
    i = min(int(pos), len(_STOPS) - 2)
    f = pos - i
    a, b = _rgb(_STOPS[i]), _rgb(_STOPS[i + 1])
    return "#%02x%02x%02x" % tuple(round(x + (y - x) * f) for x, y in zip(a, b))


def read_token_records(src: Union[str, Path, Iterable[Mapping]]) -> List[Dict[str, Any]]:
    """Read ``{"sample", "tokens", "weights", "kinds"}`` records from a JSONL file (or take an
    iterable of dicts) and validate them; errors name the file and line."""
    name = "<records>"
    if isinstance(src, (str, Path)):
        name = str(src)
        items = []
        with open(src, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    items.append((f"{name}:{lineno}", json.loads(line)))
                except json.JSONDecodeError as e:
                    raise ResultsError(f"{name}:{lineno}: invalid JSON: {e.msg}") from None
    else:
        items = [(f"{name}[{i}]", r) for i, r in enumerate(src)]
    out = []
    for where, r in items:
        if not isinstance(r, Mapping):
            raise ResultsError(f"{where}: expected an object with sample, tokens, weights, kinds")
        toks, ws = r.get("tokens"), r.get("weights")
        kinds = r.get("kinds")
        text_toks = r.get("text_tokens")  # decoded pieces (TokenWeightLogger), nicer than BPE symbols
        if isinstance(text_toks, list) and isinstance(toks, list) and len(text_toks) == len(toks) \
                and all(isinstance(t, str) for t in text_toks):
            toks = text_toks
        if not isinstance(toks, list) or not all(isinstance(t, str) for t in toks):
            raise ResultsError(f"{where}: 'tokens' must be a list of strings")
        if not isinstance(ws, list) or not all(w is None or is_number(w) for w in ws):
            raise ResultsError(f"{where}: 'weights' must be a list of numbers")
        if kinds is None:
            kinds = [KIND_IGNORE] * len(toks)
        if not isinstance(kinds, list) or not all(isinstance(k, int) and not isinstance(k, bool) for k in kinds):
            raise ResultsError(f"{where}: 'kinds' must be a list of integers")
        if not (len(toks) == len(ws) == len(kinds)):
            raise ResultsError(f"{where}: tokens/weights/kinds lengths differ "
                               f"({len(toks)}/{len(ws)}/{len(kinds)})")
        step = r.get("step")
        if step is not None and (isinstance(step, bool) or not isinstance(step, int)):
            raise ResultsError(f"{where}: 'step' must be an integer")
        out.append({"sample": r.get("sample", len(out)), "step": step, "tokens": toks,
                    "weights": [float("nan") if w is None else float(w) for w in ws], "kinds": kinds})
    return out


def latest_per_sample(records: Sequence[Mapping]) -> List[Mapping]:
    """Training logs hold one record per sample per logged step: keep each sample's record of
    the last step (the final weights), in the order samples first appear."""
    if not any(r.get("step") is not None for r in records):
        return list(records)
    best: Dict[Any, Mapping] = {}
    for r in records:
        key = json.dumps(r["sample"], sort_keys=True, default=str)
        cur = best.get(key)
        if cur is None or (r.get("step") or 0) >= (cur.get("step") or 0):
            best[key] = r
    return list(best.values())


def _display_token(tok: str) -> str:
    # byte-level BPE pieces (convert_ids_to_tokens) mark spaces/newlines with Ġ/Ċ
    return tok.replace("Ġ", " ").replace("Ċ", "\n")


_HEATMAP_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;
 margin:24px auto;max-width:1000px;padding:0 16px;color:#1a1a1a;background:#fafafa}
h1{font-size:20px;margin:0 0 4px}
.meta{color:#555;font-size:13px;margin-bottom:14px}
.legend{display:flex;flex-wrap:wrap;gap:10px 22px;align-items:center;background:#fff;border:1px solid #ddd;
 border-radius:6px;padding:10px 14px;font-size:13px;margin-bottom:14px;position:sticky;top:0;z-index:1}
.bar{width:220px;height:14px;border:1px solid #bbb;border-radius:2px;background:linear-gradient(to right,%STOPS%)}
.ticks{display:flex;justify-content:space-between;width:222px;font-size:11px;color:#555}
table.stats{border-collapse:collapse;font-size:13px;margin-bottom:16px;background:#fff}
table.stats td,table.stats th{border:1px solid #ddd;padding:3px 10px;text-align:right}
table.stats th{background:#f0f0f0}
.sample{background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px 14px 12px;margin-bottom:10px}
.sh{font-size:12px;color:#666;margin-bottom:4px}
.txt{font-size:16px;line-height:2.0;white-space:pre-wrap;word-wrap:break-word}
.t{padding:2px 0;border-radius:2px;box-shadow:inset -1px 0 0 rgba(0,0,0,.10)}
.k1{text-decoration:underline;text-decoration-color:#1d4ed8;text-decoration-thickness:3px;
 text-underline-offset:4px;text-decoration-skip-ink:none}
.km1{font-style:italic;opacity:.65}
.kn{color:#999}
.ex{padding:1px 5px;border:1px solid #ccc;border-radius:3px;background:#fff}
"""


def render_heatmap(records: Sequence[Mapping], method: str, benchmark: str = "", max_samples: int = 200,
                   vmax: Optional[float] = None) -> str:
    """Self-contained HTML: tokens on a white -> red background by weight (0 -> ``vmax``,
    default the largest finite weight shown), ground-truth forget-specific tokens underlined,
    ignored tokens in grey italics, hover for the exact weight and kind."""
    shown = list(records)[:max_samples]
    ws = [w for r in shown for w in r["weights"] if math.isfinite(w)]
    if vmax is None:
        vmax = max(ws) if ws and max(ws) > 0 else 1.0
    esc = lambda s: html.escape(str(s), quote=True)  # noqa: E731

    # summary over shown samples: mean weight by kind, AUROC(weight -> forget-specific)
    by_kind: Dict[int, List[float]] = {}
    scores, labels = [], []
    for r in shown:
        for w, k in zip(r["weights"], r["kinds"]):
            if not math.isfinite(w):
                continue
            by_kind.setdefault(k, []).append(w)
            if k in (KIND_TEMPLATE, KIND_SPECIFIC, KIND_SHARED):
                scores.append(w)
                labels.append(k == KIND_SPECIFIC)
    auroc_value = auroc(scores, labels)

    title = f"Token weights — {method}" + (f" on {benchmark}" if benchmark else "")
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>{esc(title)}</title>",
             "<style>" + _HEATMAP_CSS.replace("%STOPS%", ",".join(_STOPS)) + "</style></head><body>",
             f"<h1>{esc(title)}</h1>",
             f'<div class="meta">{len(shown)} of {len(records)} sample(s) shown · color scale 0 → '
             f"{esc(f'{vmax:.3g}')} (weights above are clipped) · AUROC of weights for "
             f"forget-specific vs other labelled tokens: "
             f"<b>{esc('n/a' if auroc_value is None else f'{auroc_value:.3f}')}</b></div>"]
    parts.append(
        '<div class="legend"><div><div class="bar"></div><div class="ticks"><span>0</span>'
        f"<span>{esc(f'{vmax / 2:.3g}')}</span><span>{esc(f'{vmax:.3g}')}</span></div></div>"
        '<div><span class="ex k1">forget</span> underlined = ground-truth forget-specific</div>'
        '<div><span class="ex km1">name</span> italic = ignored (no label)</div>'
        "<div>hover a token for its weight and kind</div></div>")
    parts.append('<table class="stats"><tr><th style="text-align:left">label</th><th>tokens</th>'
                 "<th>mean weight</th></tr>")
    for k in (KIND_SPECIFIC, KIND_TEMPLATE, KIND_SHARED, KIND_IGNORE):
        v = by_kind.get(k, [])
        mean = format_value(math.fsum(v) / len(v)) if v else "n/a"
        parts.append(f'<tr><td style="text-align:left">{esc(KIND_LABELS[k])}</td><td>{len(v)}</td>'
                     f"<td>{esc(mean)}</td></tr>")
    parts.append("</table>")

    for r in shown:
        n = len(r["tokens"])
        spec = [w for w, k in zip(r["weights"], r["kinds"]) if k == KIND_SPECIFIC and math.isfinite(w)]
        other = [w for w, k in zip(r["weights"], r["kinds"]) if k in (KIND_TEMPLATE, KIND_SHARED)
                 and math.isfinite(w)]
        info = f"sample {esc(r['sample'])}" + (f" · step {esc(r['step'])}" if r.get("step") is not None else "") \
            + f" · {n} tokens"
        if spec and other:
            info += (f" · mean weight forget-specific {esc(format_value(sum(spec) / len(spec)))}"
                     f" vs other {esc(format_value(sum(other) / len(other)))}")
        toks = []
        for tok, w, k in zip(r["tokens"], r["weights"], r["kinds"]):
            shown_tok = _display_token(tok)
            # leading whitespace stays uncolored, so word boundaries remain visible
            body = shown_tok.lstrip()
            lead = shown_tok[: len(shown_tok) - len(body)] if body else ""
            if lead:
                toks.append(esc(lead))
                shown_tok = body
            text = esc(shown_tok)
            tip = esc(f"w = {w:.4g} · {KIND_LABELS.get(k, f'kind {k}')}")
            if k == KIND_NONE or not math.isfinite(w):
                toks.append(f'<span class="t kn" title="{tip}">{text}</span>')
                continue
            t = w / vmax if vmax > 0 else 0.0
            fg = "#ffffff" if t > 0.62 else "#111111"
            cls = "t k1" if k == KIND_SPECIFIC else ("t km1" if k == KIND_IGNORE else "t")
            toks.append(f'<span class="{cls}" style="background:{weight_color(t)};color:{fg}" '
                        f'title="{tip}">{text}</span>')
        parts.append(f'<div class="sample"><div class="sh">{info}</div><div class="txt">{"".join(toks)}'
                     "</div></div>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_heatmap(records, out_path: Union[str, Path], method: str, benchmark: str = "",
                  max_samples: int = 200, vmax: Optional[float] = None, all_steps: bool = False) -> Path:
    """Read records (JSONL path or dicts) and write the heatmap; by default only the last
    logged step of each sample is shown (``all_steps=True``: every record)."""
    recs = read_token_records(records)
    if not all_steps:
        recs = latest_per_sample(recs)
    return atomic_write_text(out_path, render_heatmap(recs, method, benchmark, max_samples, vmax))
