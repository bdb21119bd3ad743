"""Labelled prompt datasets (built-in tasks and uploads) and gold-token rules."""

from spade_viz.data.datasets import (
    MAX_BYTES,
    MAX_ROWS,
    AnswerSplit,
    Dataset,
    DatasetError,
    Example,
    RowError,
    answer_split,
    builtin_tasks,
    choice_token_ids,
    gold_token_id,
    load_builtin,
    load_dataset,
    load_task_or_file,
)

__all__ = [
    "MAX_BYTES",
    "MAX_ROWS",
    "AnswerSplit",
    "Dataset",
    "DatasetError",
    "Example",
    "RowError",
    "answer_split",
    "builtin_tasks",
    "choice_token_ids",
    "gold_token_id",
    "load_builtin",
    "load_dataset",
    "load_task_or_file",
]
