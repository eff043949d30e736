"""Offline token counting, for streams whose provider reported no usage.

Uses the `o200k_base` encoding (GPT-4o and later) bundled in the `bpe-openai` wheel, so it
never touches the network (tiktoken downloads its encodings, so it is not used). Anthropic
models tokenise differently; for them this is an estimate, and records say so
(`usage_source = "estimated"`). The encoding loads once, on first use (~0.3 s): call
`warm_up()` at startup to keep that off the first estimated request.
"""

from __future__ import annotations

import functools
from typing import Any

ENCODING = "o200k_base"
# bpe-openai refuses texts of 1M+ characters and results over 200k tokens; a character is
# at most 4 bytes, hence at most 4 tokens, so 50k-character pieces stay under both limits.
_PIECE = 50_000


@functools.cache
def _encoding() -> Any:
    import bpe_openai

    return bpe_openai.get_encoding(ENCODING)


def warm_up() -> None:
    """Load the encoding now rather than on the first `count_tokens` call."""
    _encoding()


def count_tokens(text: str) -> int:
    """Number of `o200k_base` tokens in `text` (special-token text counts as plain text)."""
    if not text:
        return 0
    encode = _encoding().encode_ordinary
    try:
        if len(text) <= _PIECE:
            return len(encode(text))
        return sum(len(encode(text[i : i + _PIECE])) for i in range(0, len(text), _PIECE))
    except Exception:  # noqa: BLE001 - an estimate must never fail the request it describes
        return (len(text.encode("utf-8", "replace")) + 3) // 4
