"""The objectives of the language-model and sequence-classification tasks: `OBJECTIVES[name]`.

clm, mlm and mlm+nsp (which `seqlm pretrain` trains and `causal_lm` / `masked_lm` score),
classification and seq2seq (token cross-entropy over the target, optionally label-smoothed, for an
encoder-decoder or a decoder-only model): each says how many targets a batch has and returns *summed* losses over it (see
`seqlm.training.objective` for why sums). Also `check_language_model_options`, the predict settings
both language-model tasks refuse. Token classification keeps its objective in its own module.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from seqlm.data.batch import Batch
from seqlm.data.masking import IGNORE_INDEX
from seqlm.errors import ConfigError
from seqlm.models.lm_head_loss import causal_lm_loss_sums, masked_lm_loss_sums, t5_loss_sum
from seqlm.training.objective import Objective


def _shifted(labels: torch.Tensor) -> torch.Tensor:
    """Causal LM: position t predicts token t+1 (transformers' models do not shift for us here)."""
    return labels[:, 1:]


def _token_nll_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX, reduction="sum")


# --------------------------------------------------------------------------- causal LM


def _clm_counts(batch: Batch) -> dict[str, int]:
    return {"lm": int((_shifted(batch.targets["labels"]) != IGNORE_INDEX).sum())}


def _clm_losses(outputs: Any, batch: Batch) -> dict[str, torch.Tensor]:
    return {"lm": _token_nll_sum(outputs.logits[:, :-1], _shifted(batch.targets["labels"]))}


def _clm_score(outputs: Any, batch: Batch) -> dict[str, Any]:
    labels = _shifted(batch.targets["labels"])
    return {"nll": float(_token_nll_sum(outputs.logits[:, :-1], labels)), "tokens": int((labels != IGNORE_INDEX).sum())}


# --------------------------------------------------------------------------- masked LM (+ NSP)


def _mlm_logits(outputs: Any) -> torch.Tensor:
    # BertForMaskedLM returns `logits`; BertForPreTraining returns `prediction_logits`.
    return outputs.prediction_logits if hasattr(outputs, "prediction_logits") else outputs.logits


def _mlm_counts(batch: Batch) -> dict[str, int]:
    return {"lm": int((batch.targets["labels"] != IGNORE_INDEX).sum())}


def _mlm_losses(outputs: Any, batch: Batch) -> dict[str, torch.Tensor]:
    return {"lm": _token_nll_sum(_mlm_logits(outputs), batch.targets["labels"])}


def _mlm_score(outputs: Any, batch: Batch) -> dict[str, Any]:
    labels = batch.targets["labels"]
    logits = _mlm_logits(outputs)
    selected = labels != IGNORE_INDEX
    return {
        "nll": float(_token_nll_sum(logits, labels)),
        "tokens": int(selected.sum()),
        "predicted": logits.argmax(dim=-1)[selected].cpu(),
        "expected": labels[selected].cpu(),
    }


def _nsp_counts(batch: Batch) -> dict[str, int]:
    return {**_mlm_counts(batch), "nsp": int(batch.targets["next_sentence_label"].numel())}


def _nsp_losses(outputs: Any, batch: Batch) -> dict[str, torch.Tensor]:
    nsp = F.cross_entropy(outputs.seq_relationship_logits.float(), batch.targets["next_sentence_label"], reduction="sum")
    return {**_mlm_losses(outputs, batch), "nsp": nsp}


def _nsp_score(outputs: Any, batch: Batch) -> dict[str, Any]:
    logits = outputs.seq_relationship_logits.float()
    labels = batch.targets["next_sentence_label"]
    return {
        **_mlm_score(outputs, batch),
        "nsp_nll": float(F.cross_entropy(logits, labels, reduction="sum")),
        "pairs": int(labels.numel()),
        "nsp_predicted": logits.argmax(dim=-1).cpu(),
        "nsp_expected": labels.cpu(),
    }


# --------------------------------------------------------------------------- sequence classification


def _classification_counts(batch: Batch) -> dict[str, float]:
    # Examples; with class weights (targets["weights"], one per example) their sum, as
    # torch's weighted cross-entropy normalises: the loss is then Σ w·nll / Σ w over the step.
    weights = batch.targets.get("weights")
    if weights is not None:
        return {"classification": float(weights.sum())}
    return {"classification": int(batch.targets["labels"].numel())}


def _classification_losses(outputs: Any, batch: Batch) -> dict[str, torch.Tensor]:
    nll = F.cross_entropy(outputs.logits.float(), batch.targets["labels"], reduction="none")
    weights = batch.targets.get("weights")
    return {"classification": (nll * weights).sum() if weights is not None else nll.sum()}


def _classification_score(outputs: Any, batch: Batch) -> dict[str, Any]:
    # Unweighted: validation reports the plain mean cross-entropy, whatever training weighted.
    logits = outputs.logits.float()
    labels = batch.targets["labels"]
    return {
        "nll": float(F.cross_entropy(logits, labels, reduction="sum")),
        "tokens": int(labels.numel()),  # examples
        "predicted": logits.argmax(dim=-1).cpu(),
        "expected": labels.cpu(),
    }


# --------------------------------------------------------------------------- seq2seq (encoder-decoder or decoder-only)
# One objective for both kinds of seq2seq model, told apart by the batch's shape, so the task keeps one Objective
# (`Task.objective` is fixed before the model is loaded) and the loop learns nothing about the model kind:
# - encoder-decoder: decoder labels are a model input (`inputs["labels"]`; HF shifts them into the decoder's
#   inputs), aligned with the logits;
# - decoder-only: `targets["labels"]` over prompt + target (IGNORE_INDEX on the prompt and padding), and, as for
#   clm, position t predicts token t+1.


def _seq2seq_labels(batch: Batch) -> torch.Tensor:
    labels = batch.inputs.get("labels")
    return labels if labels is not None else _shifted(batch.targets["labels"])


def _seq2seq_logits(outputs: Any, batch: Batch) -> torch.Tensor:
    return outputs.logits if "labels" in batch.inputs else outputs.logits[:, :-1]


def _seq2seq_counts(batch: Batch) -> dict[str, int]:
    return {"seq2seq": int((_seq2seq_labels(batch) != IGNORE_INDEX).sum())}


def _seq2seq_nll_sum(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    return F.cross_entropy(
        logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX, reduction="sum", label_smoothing=label_smoothing
    )


def _label_smoothing(batch: Batch) -> float:
    # The smoothing travels with the batch (one value per example, all equal): an Objective is fixed per task.
    smoothing = batch.targets.get("label_smoothing")
    return float(smoothing[0]) if smoothing is not None and len(smoothing) else 0.0


def _seq2seq_losses(outputs: Any, batch: Batch) -> dict[str, torch.Tensor]:
    return {"seq2seq": _seq2seq_nll_sum(_seq2seq_logits(outputs, batch), _seq2seq_labels(batch), _label_smoothing(batch))}


def _seq2seq_score(outputs: Any, batch: Batch) -> dict[str, Any]:
    labels = _seq2seq_labels(batch)
    return {"nll": float(_seq2seq_nll_sum(_seq2seq_logits(outputs, batch), labels)), "tokens": int((labels != IGNORE_INDEX).sum())}


def _seq2seq_fast(model: Any, batch: Batch) -> dict[str, torch.Tensor] | None:
    """Encoder-decoder: the model run on decoder inputs shifted from the labels, as HF does, but without
    `labels`, so HF's own mean loss (a second cross-entropy over the vocabulary) is never computed; a T5's
    head and (label-smoothed) loss fused, run only at the labelled positions (`t5_loss_sum`). Decoder-only:
    the fused causal-LM loss (no full logits). Else None: the reference path."""
    smoothing = _label_smoothing(batch)
    if "labels" not in batch.inputs:
        sums = causal_lm_loss_sums(model, batch.inputs, batch.targets["labels"], smoothing)
        return None if sums is None else {"seq2seq": sums["lm"]}
    shifted = _encoder_decoder_inputs(model, batch)
    if shifted is None:
        return None
    inputs, decoder_input_ids = shifted
    fused = t5_loss_sum(model, inputs, decoder_input_ids, _seq2seq_labels(batch), smoothing)
    if fused is not None:
        return {"seq2seq": fused}
    return _seq2seq_losses(model(**inputs, decoder_input_ids=decoder_input_ids), batch)


def _encoder_decoder_inputs(model: Any, batch: Batch) -> tuple[dict[str, torch.Tensor], torch.Tensor] | None:
    """An encoder-decoder's inputs without `labels`, and its decoder inputs: the labels shifted right after the
    start token, as HF shifts them (None without a start or pad id: the reference path)."""
    config = getattr(model, "module", model).config  # DDP wraps the HF model
    start, pad = config.decoder_start_token_id, config.pad_token_id
    if start is None or pad is None:
        return None
    labels = _seq2seq_labels(batch)
    decoder_input_ids = torch.cat([labels.new_full((labels.shape[0], 1), start), labels[:, :-1]], dim=1)
    inputs = {key: value for key, value in batch.inputs.items() if key != "labels"}
    return inputs, decoder_input_ids.masked_fill(decoder_input_ids == IGNORE_INDEX, pad)


def _clm_fast(model: Any, batch: Batch) -> dict[str, torch.Tensor] | None:
    return causal_lm_loss_sums(model, batch.inputs, batch.targets["labels"])


def _clm_fast_score(model: Any, batch: Batch) -> dict[str, Any] | None:
    sums = causal_lm_loss_sums(model, batch.inputs, batch.targets["labels"])
    return None if sums is None else {"nll": float(sums["lm"]), "tokens": _clm_counts(batch)["lm"]}


def _seq2seq_fast_score(model: Any, batch: Batch) -> dict[str, Any] | None:
    """The loss over the target tokens alone, without full logits (see `_seq2seq_fast`): decoder-only models and
    T5; else None."""
    labels = _seq2seq_labels(batch)
    if "labels" in batch.inputs:
        shifted = _encoder_decoder_inputs(model, batch)
        nll = None if shifted is None else t5_loss_sum(model, *shifted, labels, 0.0)
    else:
        sums = causal_lm_loss_sums(model, batch.inputs, batch.targets["labels"])
        nll = None if sums is None else sums["lm"]
    return None if nll is None else {"nll": float(nll), "tokens": int((labels != IGNORE_INDEX).sum())}


def _mlm_fast(model: Any, batch: Batch) -> dict[str, torch.Tensor] | None:
    return masked_lm_loss_sums(model, batch.inputs, batch.targets)


OBJECTIVES: dict[str, Objective] = {
    "clm": Objective("clm", _clm_counts, _clm_losses, _clm_score, _clm_fast, _clm_fast_score),
    "mlm": Objective("mlm", _mlm_counts, _mlm_losses, _mlm_score, _mlm_fast),
    "mlm+nsp": Objective("mlm+nsp", _nsp_counts, _nsp_losses, _nsp_score, _mlm_fast),
    "classification": Objective("classification", _classification_counts, _classification_losses, _classification_score),
    "seq2seq": Objective("seq2seq", _seq2seq_counts, _seq2seq_losses, _seq2seq_score, _seq2seq_fast, _seq2seq_fast_score),
}


def check_language_model_options(task: str, config: Any, loaded: Any, chat: bool = False) -> None:
    """`seqlm predict` settings a language model does not use are refused, not ignored; `chat`: the task renders
    chat templates (`apply_chat_template`), which then needs one."""
    if not chat:
        refuse_chat_template(config, f"a {task} model")
    elif config.apply_chat_template and not getattr(loaded.tokenizer, "chat_template", None):
        raise ConfigError(f"apply_chat_template: the tokenizer of {config.model} has no chat template; drop it (prompts are then continued as written)")
    if config.text_pair_field is not None:
        raise ConfigError(f"text_pair_field is for sequence classifiers; {config.model} is a {task} model")
    if config.max_length is not None:
        raise ConfigError(
            f"max_length is for sequence classifiers; {config.model} is a {task} model (causal prompts are limited by the model's positions)"
        )
    refuse_source_prefix(config, f"a {task} model")
    if config.generation.uses_beams():
        raise ConfigError(
            f"generation: num_beams, length_penalty, no_repeat_ngram_size, early_stopping and num_return_sequences are for "
            f"seq2seq models; {config.model} is a {task} model"
        )


def refuse_source_prefix(config: Any, kind: str) -> None:
    """`predict: source_prefix` is for seq2seq models; any other task refuses it rather than ignore it."""
    if getattr(config, "source_prefix", None) is not None:
        raise ConfigError(f"source_prefix is for seq2seq models; {config.model} is {kind}: drop it")


def refuse_chat_template(config: Any, kind: str) -> None:
    """`predict: apply_chat_template` is for causal LMs seqlm did not fine-tune; any other task refuses it."""
    if getattr(config, "apply_chat_template", False):
        raise ConfigError(f"apply_chat_template is for causal LMs seqlm did not fine-tune; {config.model} is {kind}: drop it")
