"""Labelled examples as the model reads them: `<s>` + the prompt's tokens up to the gold answer."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from ..data import answer_split, choice_token_ids
from ..data.datasets import overlong
from ..limits import DEFAULT_TOKEN_LIMIT
from ..models.loading import LoadedModel


@dataclass(frozen=True)
class PreparedExample:
    """One example's token ids (with `<s>`), gold token and answer choices' first tokens."""

    index: int  # position in the dataset
    id: str
    token_ids: tuple[int, ...]  # <s> + context tokens; the answer position is the last
    gold_id: int
    choice_ids: tuple[int, ...] | None

    @property
    def answer_position(self) -> int:
        return len(self.token_ids) - 1


def prepare_examples(lm: LoadedModel, examples: Sequence, max_tokens: int = DEFAULT_TOKEN_LIMIT):
    """Token ids, gold and choice tokens of each example; (prepared, skipped [(id, reason)]).

    A prompt that cannot fit the limit whatever the tokenizer (`data.datasets.overlong`) is skipped
    before it is tokenized, so one huge row costs no time."""
    limit = min(max_tokens, lm.max_positions or max_tokens)
    prepared, skipped = [], []
    for index, example in enumerate(examples):
        if too_long := overlong(example.prompt, limit):
            skipped.append((example.id, f"the prompt has {too_long} (the limit); shorten it or raise the limit"))
            continue
        try:
            split = answer_split(lm.tokenizer, example.prompt, example.answer)
            choices = None
            if example.choices:
                choices = tuple(choice_token_ids(lm.tokenizer, example.prompt, example.choices))
                if split.gold_id not in choices:
                    raise ValueError("the answer's first token is not among the choices' first tokens")
        except ValueError as err:
            skipped.append((example.id, str(err)))
            continue
        ids = (lm.bos_id, *split.context_ids)
        if len(ids) > limit:
            skipped.append((example.id, f"{len(ids)} tokens with <s>; the limit is {limit}"))
            continue
        prepared.append(PreparedExample(index, example.id, ids, split.gold_id, choices))
    return prepared, skipped


def batches(prepared: Sequence[PreparedExample], batch_size: int, max_tokens: int = 4096) -> Iterator[list[int]]:
    """Index lists of examples of similar length (less padding), at most batch_size and ~max_tokens each."""
    order = sorted(range(len(prepared)), key=lambda i: (len(prepared[i].token_ids), i))
    batch: list[int] = []
    for i in order:
        width = len(prepared[i].token_ids)
        if batch and (len(batch) >= batch_size or (len(batch) + 1) * width > max_tokens):
            yield batch
            batch = []
        batch.append(i)
    if batch:
        yield batch
