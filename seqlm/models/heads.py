"""The one table of model heads: head name → transformers Auto class, its mapping, and the
architecture names (config.json `architectures`) that mark a model trained with that head.

Tasks name the head their models carry (`Task.head`); only `seqlm.models` turns a head into a
transformers class, so no other package names one.

A model whose architecture alone does not say what seqlm trained it for (a causal LM fine-tuned to answer prompts,
the decoder-only seq2seq model) names its head in config.json: `"seqlm": {"head": ..., ...}` (MARKER_KEY), written
by the task that trained it; `detect_head` reads that first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Head:
    auto_class: str  # transformers.<auto_class>
    mapping: str  # transformers.models.auto.modeling_auto.<mapping>: the configs that have this head
    suffixes: tuple[str, ...]  # architecture names ending so were saved with this head


PROMPTED_HEAD = "prompted_lm"
MARKER_KEY = "seqlm"  # config.json's entry where seqlm records what it trained a model for (see the module docstring)

# In detection order: a fine-tuned head wins over the LM heads its body may also support.
HEADS: dict[str, Head] = {
    "sequence_classification": Head(
        "AutoModelForSequenceClassification", "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING", ("ForSequenceClassification",)
    ),
    "token_classification": Head("AutoModelForTokenClassification", "MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING", ("ForTokenClassification",)),
    # Extractive QA: a start and an end score per token (span head on an encoder).
    "question_answering": Head("AutoModelForQuestionAnswering", "MODEL_FOR_QUESTION_ANSWERING_MAPPING", ("ForQuestionAnswering",)),
    # Encoder-decoder LMs (T5, BART, Marian, ...): `*ForConditionalGeneration`, checked against the mapping in
    # detect_head, as vision-language models share the suffix.
    "seq2seq_lm": Head("AutoModelForSeq2SeqLM", "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING", ("ForConditionalGeneration",)),
    # A causal LM fine-tuned on prompt + target (seq2seq, decoder-only): transformers' causal LM head, told apart
    # from a plain causal LM only by its config.json's MARKER_KEY entry.
    PROMPTED_HEAD: Head("AutoModelForCausalLM", "MODEL_FOR_CAUSAL_LM_MAPPING", ()),
    "causal_lm": Head("AutoModelForCausalLM", "MODEL_FOR_CAUSAL_LM_MAPPING", ("ForCausalLM", "LMHeadModel")),
    "masked_lm": Head("AutoModelForMaskedLM", "MODEL_FOR_MASKED_LM_MAPPING", ("ForMaskedLM", "ForPreTraining")),
    # Masked LM + next-sentence prediction, for pretraining only: a saved one is read back as a masked LM.
    "pretraining": Head("AutoModelForPreTraining", "MODEL_FOR_PRETRAINING_MAPPING", ()),
}


def auto_class(head: str) -> Any:
    import transformers

    return getattr(transformers, HEADS[head].auto_class)


def supports(config: Any, head: str) -> bool:
    """Whether transformers has `head` for a model of this config's type."""
    from transformers.models.auto import modeling_auto

    return type(config) in getattr(modeling_auto, HEADS[head].mapping)


def detect_head(config: Any) -> str | None:
    """The head a saved model carries, from its config's `architectures`; for a bare config, causal or
    masked LM from the auto mappings (a decoder config means left-to-right); None if neither fits.
    A head named by the config's MARKER_KEY entry wins, when transformers has it for this config."""
    marked = getattr(config, MARKER_KEY, None)
    if isinstance(marked, dict) and marked.get("head") in HEADS and supports(config, marked["head"]):
        return str(marked["head"])
    for name in getattr(config, "architectures", None) or []:
        for head, spec in HEADS.items():
            if name.endswith(spec.suffixes) and (head != "seq2seq_lm" or supports(config, head)):
                return head
    if getattr(config, "is_encoder_decoder", False) and supports(config, "seq2seq_lm"):
        return "seq2seq_lm"
    causal, masked = supports(config, "causal_lm"), supports(config, "masked_lm")
    if causal and masked:  # e.g. BERT
        return "causal_lm" if getattr(config, "is_decoder", False) else "masked_lm"
    if causal:
        return "causal_lm"
    return "masked_lm" if masked else None
