"""`seqlm predict`: apply a model to a file of inputs and write one record per input.

Inputs (text lines, JSONL, CSV or stdin; bad lines fail or, with `skip_bad_lines`, are skipped and
listed at the end) are read by `seqlm.io.predict_inputs`; see its docstring for the rules. Fields passed
through from jsonl/csv inputs come first in each record.

Records, always in input order (batches are formed by length internally):
  - causal model: {"input", "generated" (the continuation only, special tokens removed),
    "n_generated_tokens" (new tokens before EOS, the EOS itself not counted)}. An empty prompt
    starts from the BOS token. Prompts longer than the model's positions minus max_new_tokens
    keep their most recent tokens; how many were cut is reported as a warning at the end.
  - masked model: {"input", "masks": one list per [MASK], in text order, of top_k
    {"token", "token_id", "score" (softmax probability)} sorted by score, "filled": the input
    with each mask replaced by its top-1 token}. An input without a mask token is a DataError.
    A passed-through field named like one of these output fields is a DataError.
  - sequence classifier: {"input", "input_pair" (with text_pair_field), "label", "score", "scores"}
    (see `seqlm.tasks.classification_predict`). A passed-through field named like an output field (e.g. a
    gold "label" column) is kept as "input_<name>".
Output is JSON Lines, or CSV with nested fields as JSON strings (`output_format`, or auto: .csv
files are CSV). Files are written atomically; stdout carries only the records, logs go to stderr.
An output that cannot be written (a directory, under a file, not writable, disk full) is an OutputError
(exit 4), checked before the inputs are read when possible; no partial file is left.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from seqlm.config.schema import PredictConfig
from seqlm.console import Console
from seqlm.errors import ConfigError, DataError
from seqlm.io.output_paths import check_output_file, write_failure
from seqlm.io.predict_inputs import InputRecord, Inputs, length_batches, read_inputs
from seqlm.models.loading import LoadedModel, load_for_inference, remote_code_warning
from seqlm.runtime.device import Precision, resolve_precision, seed_everything, select_device
from seqlm.tasks import classification_predict as predict_classification

__all__ = ["InputRecord", "read_inputs", "run", "write_records"]

OUTPUT_FIELDS = frozenset({"input", "generated", "n_generated_tokens", "masks", "filled"})  # causal and masked LMs


def run(config: PredictConfig, console: Console) -> dict[str, Any]:
    """Predict for every input of `config.input`, write the records, return a summary dict."""
    _check_output_target(config.output)
    inputs = read_inputs(config.input, config.input_format, config.text_field, console,
                         text_pair_field=config.text_pair_field, skip_bad_lines=config.skip_bad_lines)
    records = inputs.records
    device = select_device(config.device)
    precision = Precision(device, resolve_precision(config.precision, device))
    console.info(f"loading {config.model} on {device.type} ({precision.name})")
    if config.trust_remote_code:
        console.warn(remote_code_warning(config.model))
    loaded = load_for_inference(config.model, device, trust_remote_code=config.trust_remote_code)
    limit = _check_objective_options(config, loaded)
    _check_pass_through(inputs, loaded.objective, console)
    seed_everything(config.seed)
    start = time.monotonic()
    n_truncated = 0
    with console.progress("predict", total=len(records), unit="inputs") as progress:
        if loaded.objective == "clm":
            results, n_truncated = generate(loaded, records, config, precision, progress.update)
        elif loaded.objective == "mlm":
            results = fill_masks(loaded, records, config, precision, progress.update)
        else:
            results, n_truncated = predict_classification.classify(loaded, records, config, precision, limit, progress.update)
    elapsed = max(time.monotonic() - start, 1e-9)
    write_records([{**rec.extra, **res} for rec, res in zip(records, results)], config.output, config.output_format)
    if n_truncated and loaded.objective == "clm":
        limit = (loaded.max_positions or 0) - config.generation.max_new_tokens
        console.warn(
            f"{n_truncated} input(s) were longer than {limit} tokens (the model's {loaded.max_positions} positions "
            f"minus generation.max_new_tokens) and kept only their last {limit} tokens"
        )
    elif n_truncated:
        why = "max_length" if config.max_length is not None else "the model's maximum; set max_length to change it"
        console.warn(f"{n_truncated} input(s) were longer than {limit} tokens ({why}) and were cut to their first {limit}")
    if inputs.skipped:
        console.warn(inputs.skipped_message())
    rate = len(records) / elapsed
    console.info(f"predicted {len(records)} inputs in {elapsed:.1f}s ({rate:.1f} inputs/s) ({loaded.objective})")
    return {"n_inputs": len(records), "n_truncated": n_truncated, "n_skipped": len(inputs.skipped), "seconds": elapsed,
            "inputs_per_s": rate, "objective": loaded.objective, "output": config.output}


def _check_objective_options(config: PredictConfig, loaded: LoadedModel) -> int | None:
    """Settings that only classifiers use; returns the classifier's token limit per input."""
    if loaded.objective == "classification":
        return predict_classification.length_limit(loaded, config.max_length)
    if config.text_pair_field is not None:
        raise ConfigError(f"text_pair_field is for sequence classifiers; {config.model} is a {loaded.objective} model")
    if config.max_length is not None:
        raise ConfigError(f"max_length is for sequence classifiers; {config.model} is a {loaded.objective} model "
                          "(causal prompts are limited by the model's positions)")
    return None


def _check_pass_through(inputs: Inputs, objective: str, console: Console) -> None:
    """Passed-through fields must not collide with the output's; a classifier's are renamed input_<name>."""
    fields = set(predict_classification.OUTPUT_FIELDS) if objective == "classification" else OUTPUT_FIELDS
    renamed: set[str] = set()
    for record in inputs.records:
        for key in sorted(fields & record.extra.keys()):
            where = f"{inputs.name}: line {record.line}: field '{key}'"
            new = f"input_{key}"
            if objective != "classification":
                raise DataError(f"{where} would be overwritten by the output; rename it in the input")
            if new in record.extra or new in fields:
                raise DataError(f"{where} clashes with the output, and '{new}' is taken too; rename it in the input")
            record.extra[new] = record.extra.pop(key)
            renamed.add(key)
    if renamed:
        names = ", ".join(f"'{key}' as 'input_{key}'" for key in sorted(renamed))
        console.info(f"input fields named like output fields are passed through renamed: {names}")


def generate(
    loaded: LoadedModel, records: list[InputRecord], config: PredictConfig, precision: Precision, report: Any
) -> tuple[list[dict[str, Any]], int]:
    """Continuations of every prompt, in input order, and how many prompts were truncated."""
    tokenizer, model, gen = loaded.tokenizer, loaded.model, config.generation
    start_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    eos = model.generation_config.eos_token_id
    eos = tokenizer.eos_token_id if eos is None else eos
    eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
    limit = None
    if loaded.max_positions is not None:
        limit = loaded.max_positions - gen.max_new_tokens
        if limit < 1:
            raise ConfigError(
                f"generation.max_new_tokens ({gen.max_new_tokens}) leaves no room for a prompt in the model's "
                f"{loaded.max_positions} positions; lower it"
            )
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0  # masked out, any id works
    prompts, n_truncated = [], 0
    # verbose=False: over-long prompts are handled (and reported) below, not by a tokenizer warning.
    for record, ids in zip(records, tokenizer([r.text for r in records], verbose=False)["input_ids"]):
        if not ids:
            if start_id is None:
                raise DataError(f"line {record.line}: empty prompt, and the tokenizer has no BOS/EOS token to start from")
            ids = [start_id]
        if limit is not None and len(ids) > limit:
            ids, n_truncated = ids[-limit:], n_truncated + 1  # keep the most recent context
        prompts.append(ids)
    options: dict[str, Any] = {"max_new_tokens": gen.max_new_tokens, "do_sample": gen.do_sample,
                               "pad_token_id": pad_id, "eos_token_id": sorted(eos_ids) or None}
    if gen.do_sample:
        # top_k=0 / top_p=1.0 switch the filters off; None would fall back to the model's defaults (top_k 50).
        options.update(temperature=gen.temperature, top_k=gen.top_k or 0, top_p=gen.top_p or 1.0)
    results: list[dict[str, Any]] = [{} for _ in records]
    for done, batch in length_batches(prompts, config.batch_size):
        input_ids, mask = _pad([prompts[i] for i in batch], pad_id, left=True)
        with torch.inference_mode(), precision.autocast():
            output = model.generate(input_ids=input_ids.to(model.device), attention_mask=mask.to(model.device), **options)
        for index, row in zip(batch, output[:, input_ids.shape[1]:].tolist()):
            stop = next((pos for pos, token in enumerate(row) if token in eos_ids), len(row))
            text = tokenizer.decode(row[:stop], skip_special_tokens=True)
            results[index] = {"input": records[index].text, "generated": text, "n_generated_tokens": stop}
        report(done)
    return results, n_truncated


def fill_masks(
    loaded: LoadedModel, records: list[InputRecord], config: PredictConfig, precision: Precision, report: Any
) -> list[dict[str, Any]]:
    """Top-k candidates for every mask token of every input, in input order."""
    tokenizer, model = loaded.tokenizer, loaded.model
    mask_token, mask_id = tokenizer.mask_token, tokenizer.mask_token_id
    name = "<stdin>" if config.input == "-" else config.input
    encoded = tokenizer([r.text for r in records], verbose=False)["input_ids"]
    for record, ids in zip(records, encoded):
        if mask_id not in ids:
            raise DataError(f"{name}: line {record.line}: no {mask_token} token in the input; mark each word to predict with {mask_token}")
        if loaded.max_positions is not None and len(ids) > loaded.max_positions:
            raise DataError(f"{name}: line {record.line}: {len(ids)} tokens, more than the model's {loaded.max_positions}; shorten it")
    top_k = min(config.top_k, model.config.vocab_size)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    results: list[dict[str, Any]] = [{} for _ in records]
    for done, batch in length_batches(encoded, config.batch_size):
        input_ids, attention = _pad([encoded[i] for i in batch], pad_id, left=False)
        with torch.inference_mode(), precision.autocast():
            logits = model(input_ids=input_ids.to(model.device), attention_mask=attention.to(model.device)).logits
        for row, index in enumerate(batch):
            positions = (input_ids[row] == mask_id).nonzero().flatten().to(logits.device)
            probs = logits[row, positions].float().softmax(-1)  # fp32 softmax: autocast logits may be bf16
            scores, ids = probs.topk(top_k, dim=-1)
            masks = [
                [{"token": tokenizer.decode([i]), "token_id": i, "score": s} for i, s in zip(id_row, score_row)]
                for id_row, score_row in zip(ids.tolist(), scores.tolist())
            ]
            text = records[index].text
            filled = _fill(text, mask_token, [m[0]["token"] for m in masks])
            results[index] = {"input": text, "masks": masks, "filled": filled}
        report(done)
    return results


def _fill(text: str, mask_token: str, tokens: list[str]) -> str:
    """Replace the mask tokens of `text` in order; word pieces ('##ing') lose their marker."""
    parts = text.split(mask_token)
    if len(parts) != len(tokens) + 1:  # the tokenizer matched masks the plain text search did not
        return text
    pieces = [parts[0]]
    for token, rest in zip(tokens, parts[1:]):
        pieces += [token.strip().removeprefix("##"), rest]
    return "".join(pieces)


def _pad(batch: list[list[int]], pad_id: int, *, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(ids) for ids in batch)
    rows, masks = [], []
    for ids in batch:
        gap = width - len(ids)
        rows.append([pad_id] * gap + ids if left else ids + [pad_id] * gap)
        masks.append([0] * gap + [1] * len(ids) if left else [1] * len(ids) + [0] * gap)
    return torch.tensor(rows, dtype=torch.long), torch.tensor(masks, dtype=torch.long)


def _check_output_target(output: str) -> None:
    """Fail (OutputError, exit 4) before the inputs are read and the model runs when the output cannot be written."""
    if output != "-":
        check_output_file(Path(output), "output")


def write_records(records: list[dict[str, Any]], output: str, output_format: str) -> None:
    """Write JSONL or CSV to `output` ('-' is stdout); a file appears only once fully written."""
    if output_format == "auto":
        output_format = "csv" if output != "-" and Path(output).suffix.lower() == ".csv" else "jsonl"
    if output == "-":
        text = io.StringIO()
        _serialize(records, output_format, text)
        sys.stdout.flush()
        try:
            # Bytes, not text: stdout's locale encoding may not be UTF-8 (LANG=C in cron jobs).
            sys.stdout.buffer.write(text.getvalue().encode("utf-8"))
            sys.stdout.buffer.flush()
        except BrokenPipeError:  # the reader left early (`| head`): nothing more to deliver
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return
    path = Path(output)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        failure = write_failure(exc, path, "output")
        if failure is None:
            raise
        raise failure from exc
    try:
        with open(handle, "w", encoding="utf-8", newline="") as stream:
            _serialize(records, output_format, stream)
        os.replace(temp, path)
    except BaseException as exc:
        Path(temp).unlink(missing_ok=True)
        failure = write_failure(exc, path, "output") if isinstance(exc, OSError) else None
        if failure is not None:
            raise failure from exc  # e.g. disk full: exit 4, no partial file left
        raise


def _serialize(records: list[dict[str, Any]], output_format: str, stream: Any) -> None:
    if output_format == "jsonl":
        for record in records:
            stream.write(json.dumps(record, ensure_ascii=False) + "\n")
        return
    columns = list(dict.fromkeys(key for record in records for key in record))  # first-seen order
    writer = csv.DictWriter(stream, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow({key: _csv_cell(value) for key, value in record.items()})


def _csv_cell(value: Any) -> Any:
    if isinstance(value, (dict, list, bool)) or value is None:
        return json.dumps(value, ensure_ascii=False)  # nested fields (and JSON literals) stay parseable
    return value
