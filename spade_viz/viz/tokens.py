r"""Token strings made visible: whitespace, line breaks and special tokens you can see in a cell.

Decoded tokens are often invisible or ambiguous in a plot: `" Paris"` and `"Paris"` look the
same, `"\n"` is blank, `"<|im_start|>"` is long. `visible_token` fixes that:

- a leading space becomes `␣` (one per space), so `" Paris"` shows as `␣Paris`;
- a line break becomes `↵`, a tab `⇥`, a carriage return `␍`, other control characters `\xNN`;
- a special token such as `<s>` or `<|im_start|>` is shown in angle quotes: `⟨s⟩`, `⟨im_start⟩`;
- an empty string (a partial UTF-8 byte the tokenizer cannot decode alone) shows as `∅`;
- long tokens are cut to `max_len` characters with `…`.
"""

from __future__ import annotations

import html
import re

SPACE = "␣"
NEWLINE = "↵"
TAB = "⇥"
CR = "␍"
EMPTY = "∅"
ELLIPSIS = "…"

_SPECIAL = re.compile(r"^<\|?([^<>\s|]{1,40})\|?>$|^\[([A-Z_]{2,20})\]$")
_CONTROL = {"\n": NEWLINE, "\t": TAB, "\r": CR}


def is_special(token: str) -> bool:
    """True for strings that look like special tokens: `<s>`, `</s>`, `<|im_start|>`, `[CLS]`."""
    return bool(_SPECIAL.match(token))


def _char(ch: str) -> str:
    if ch in _CONTROL:
        return _CONTROL[ch]
    if ord(ch) < 32 or ord(ch) == 127:
        return f"\\x{ord(ch):02x}"
    if ch == "\u00a0":
        return SPACE
    return ch


def visible_token(token: str, special: bool | None = None, max_len: int = 14) -> str:
    """`token` as readable text for a cell or an axis label (see the module doc)."""
    if special is None:
        special = is_special(token)
    if special:
        match = _SPECIAL.match(token)
        inner = next((g for g in match.groups() if g), token) if match else token.strip("<>|")
        text = f"⟨{inner}⟩"
    elif token == "":
        return EMPTY
    else:
        stripped = token.lstrip(" ")
        lead = len(token) - len(stripped)
        text = SPACE * lead + "".join(_char(ch) for ch in stripped)
        if stripped and stripped.rstrip(" ") != stripped:  # trailing spaces would vanish too
            body = stripped.rstrip(" ")
            text = SPACE * lead + "".join(_char(ch) for ch in body) + SPACE * (len(stripped) - len(body))
    if max_len and len(text) > max_len:
        text = text[: max_len - 1] + ELLIPSIS
    return text


def visible_tokens(tokens: list[str], max_len: int = 14, first_is_special: bool = True) -> list[str]:
    """`visible_token` of each token; position 0 (the start token) is always shown as special."""
    return [
        visible_token(tok, special=True if (i == 0 and first_is_special) else None, max_len=max_len)
        for i, tok in enumerate(tokens)
    ]


def html_token(token: str, special: bool | None = None, max_len: int = 24) -> str:
    """`visible_token` escaped for plotly hover / cell text (which is HTML-ish)."""
    return html.escape(visible_token(token, special=special, max_len=max_len), quote=False)


def distinct_labels(token_ids, token, max_len: int = 24) -> list[str]:
    """`visible_token` of each id (`token(id)` gives its text), with ` #id` added where two different ids
    would look the same (two partial-byte tokens both shown as `∅`, a space and a no-break space...)."""
    ids = [int(i) for i in token_ids]
    shown = [visible_token(token(i), max_len=max_len) for i in ids]
    alike = {s for s in shown if len({i for i, t in zip(ids, shown) if t == s}) > 1}
    return [f"{s} #{i}" if s in alike else s for i, s in zip(ids, shown)]
