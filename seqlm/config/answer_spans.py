"""The `qa:` section shared by extractive QA `seqlm finetune`, `seqlm evaluate` and `seqlm predict`.

How a question + context pair is cut into windows (`doc_stride`) and how answers are read back from the
start/end scores of every window (`max_answer_length`, `null_score_diff_threshold`); see
`seqlm.tasks.qa_answers`. Other tasks do not read it.
"""

from __future__ import annotations

from pydantic import Field

from seqlm.config.section import Section


class AnswerSpanConfig(Section):
    doc_stride: int | None = Field(
        default=None,
        ge=0,
        description="extractive_qa: context tokens two consecutive windows of one context share (run_qa.py's doc_stride); "
        "null: a third of the window (128 for 384 tokens).",
    )
    max_answer_length: int = Field(default=30, ge=1, description="extractive_qa: the longest answer, in tokens.")
    null_score_diff_threshold: float | None = Field(
        default=None,
        description="extractive_qa, SQuAD v2 style: answer nothing ('') when log P(no answer) − log P(best span) exceeds "
        "this (0.0: whenever 'no answer' is likelier); null: always answer (SQuAD v1.1).",
    )
