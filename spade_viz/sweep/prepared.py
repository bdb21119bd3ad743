"""A dataset's examples as the model reads them, tokenized once per (file, model) and kept.

The Early-exit and Compare pages ask for a sweep's cache key on every rerun, and that needs every
example's tokens: tokenizing a large upload again on each slider move would cost seconds. A small
in-process cache keyed by the dataset's content hash and the model's fingerprint and tokenizer
makes the second ask free.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from ..engine import PreparedExample, prepare_examples
from ..limits import DEFAULT_TOKEN_LIMIT
from ..models.loading import LoadedModel

_MAX_ENTRIES = 8
_CACHE: OrderedDict[tuple, tuple[tuple[PreparedExample, ...], tuple[tuple[str, str], ...]]] = OrderedDict()
_LOCK = threading.Lock()
TOKENIZATIONS = 0  # datasets actually tokenized in this process (tests count them)


def _key(lm: LoadedModel, dataset, limit: int) -> tuple:
    tokenizer = lm.tokenizer
    # the examples' own hash too (a few ms for megabytes of text): a hand-built Dataset may reuse a source_hash
    return (dataset.source_hash, hash(tuple(dataset.examples)), lm.fingerprint(), lm.bos_id,
            type(tokenizer).__name__, len(tokenizer), limit)


def prepare_dataset(lm: LoadedModel, dataset, max_tokens: int = DEFAULT_TOKEN_LIMIT):
    """`engine.prepare_examples` over the whole `dataset`, cached by its content and the model:
    (prepared examples, skipped [(id, reason)]), as new lists each call."""
    global TOKENIZATIONS
    limit = min(max_tokens, lm.max_positions or max_tokens)
    key = _key(lm, dataset, limit)
    with _LOCK:
        hit = _CACHE.get(key)
        if hit is not None:
            _CACHE.move_to_end(key)
            return list(hit[0]), list(hit[1])
    TOKENIZATIONS += 1
    prepared, skipped = prepare_examples(lm, dataset.examples, max_tokens)
    with _LOCK:
        _CACHE[key] = (tuple(prepared), tuple(skipped))
        _CACHE.move_to_end(key)
        while len(_CACHE) > _MAX_ENTRIES:
            _CACHE.popitem(last=False)
    return list(prepared), list(skipped)

