"""Labelled prompt datasets (built-in tasks, uploads, Hugging Face benchmarks) and gold-token rules."""

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
    load_hf_dataset,
    load_task_or_file,
)
from spade_viz.data.hf import HF_PREFIX, TEMPLATES, HfSpec, parse_hf_spec

__all__ = [
    "HF_PREFIX",
    "MAX_BYTES",
    "MAX_ROWS",
    "TEMPLATES",
    "AnswerSplit",
    "Dataset",
    "DatasetError",
    "Example",
    "HfSpec",
    "RowError",
    "answer_split",
    "builtin_tasks",
    "choice_token_ids",
    "gold_token_id",
    "load_builtin",
    "load_dataset",
    "load_hf_dataset",
    "load_task_or_file",
    "parse_hf_spec",
]
