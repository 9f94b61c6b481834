"""`seqlm predict`: apply a model to a file of inputs and write one record per input.

Inputs (`config.input`, a file or '-' for stdin; bytes are decoded as strict UTF-8):
  - text: every line is one input, empty lines included, so output record N always belongs to
    input line N (a final newline does not start an extra input; a trailing '\\r' and a leading
    BOM are dropped).
  - jsonl: one JSON object per line; `text_field` holds the input, every other field is copied
    into the output record (e.g. an "id"). Blank lines are skipped. `.jsonl`/`.json` files are
    read as jsonl under input_format auto, everything else (and stdin) as text.
A line that is not UTF-8, not a JSON object, or lacks the text field is a DataError naming the
file and line; so is an input with no records at all.

Records, always in input order (batches are formed by length internally):
  - causal model: {"input", "generated" (the continuation only, special tokens removed),
    "n_generated_tokens" (new tokens before EOS, the EOS itself not counted)}. An empty prompt
    starts from the BOS token. Prompts longer than the model's positions minus max_new_tokens
    keep their most recent tokens; how many were cut is reported as a warning at the end.
  - masked model: {"input", "masks": one list per [MASK], in text order, of top_k
    {"token", "token_id", "score" (softmax probability)} sorted by score, "filled": the input
    with each mask replaced by its top-1 token}. An input without a mask token is a DataError.
Output is JSON Lines, or CSV with nested fields as JSON strings (`output_format`, or auto: .csv
files are CSV). Files are written atomically; stdout carries only the records, logs go to stderr.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from seqlm.config_schema import PredictConfig
from seqlm.console import Console
from seqlm.device import Precision, resolve_precision, seed_everything, select_device
from seqlm.errors import ConfigError, DataError
from seqlm.model_loading import LoadedModel, load_for_inference

OUTPUT_FIELDS = frozenset({"input", "generated", "n_generated_tokens", "masks", "filled"})


@dataclass
class InputRecord:
    text: str
    line: int  # 1-based line number in the input, for error messages
    extra: dict[str, Any] = field(default_factory=dict)  # jsonl fields passed through to the output


def run(config: PredictConfig, console: Console) -> dict[str, Any]:
    """Predict for every input of `config.input`, write the records, return a summary dict."""
    _check_output_target(config.output)
    records = read_inputs(config.input, config.input_format, config.text_field, console)
    device = select_device(config.device)
    precision = Precision(device, resolve_precision(config.precision, device))
    console.info(f"loading {config.model} on {device.type} ({precision.name})")
    loaded = load_for_inference(config.model, device)
    seed_everything(config.seed)
    start = time.monotonic()
    n_truncated = 0
    with console.progress("predict", total=len(records), unit="inputs") as progress:
        if loaded.objective == "clm":
            results, n_truncated = generate(loaded, records, config, precision, progress.update)
        else:
            results = fill_masks(loaded, records, config, precision, progress.update)
    elapsed = max(time.monotonic() - start, 1e-9)
    write_records([{**rec.extra, **res} for rec, res in zip(records, results)], config.output, config.output_format)
    if n_truncated:
        limit = (loaded.max_positions or 0) - config.generation.max_new_tokens
        console.warn(
            f"{n_truncated} input(s) were longer than {limit} tokens (the model's {loaded.max_positions} positions "
            f"minus generation.max_new_tokens) and kept only their last {limit} tokens"
        )
    rate = len(records) / elapsed
    console.info(f"predicted {len(records)} inputs in {elapsed:.1f}s ({rate:.1f} inputs/s) ({loaded.objective})")
    return {"n_inputs": len(records), "n_truncated": n_truncated, "seconds": elapsed, "inputs_per_s": rate,
            "objective": loaded.objective, "output": config.output}


def read_inputs(source: str, input_format: str, text_field: str, console: Console | None = None) -> list[InputRecord]:
    """Parse `source` ('-' is stdin) into records; see the module docstring for the rules."""
    name = "<stdin>" if source == "-" else source
    if source == "-":
        if console is not None and sys.stdin.isatty():
            console.info("reading inputs from the terminal; end with Ctrl-D")
        data = sys.stdin.buffer.read()
    else:
        path = Path(source)
        if not path.is_file():
            raise DataError(f"{source}: input file not found; pass a text or JSONL file, or '-' for stdin")
        data = path.read_bytes()
    if input_format == "auto":
        input_format = "jsonl" if source != "-" and Path(source).suffix.lower() in (".jsonl", ".json") else "text"
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # the final newline ends the last line; it does not start an empty input
    records = []
    for number, raw in enumerate(lines, start=1):
        raw = raw.removesuffix(b"\r")
        if number == 1:
            raw = raw.removeprefix(codecs.BOM_UTF8)
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(f"{name}: line {number}: not valid UTF-8 (byte {exc.start + 1}); re-encode the file as UTF-8") from exc
        if input_format == "text":
            records.append(InputRecord(text=line, line=number))
        elif line.strip():
            records.append(_parse_json_line(line, number, name, text_field))
    if not records:
        raise DataError(f"{name}: no inputs; give one input per line (or one JSON object per line for jsonl)")
    return records


def _parse_json_line(line: str, number: int, name: str, text_field: str) -> InputRecord:
    where = f"{name}: line {number}"
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno}); expected one JSON object per line") from exc
    if not isinstance(obj, dict):
        raise DataError(f"{where}: a JSON {type(obj).__name__}, not an object; expected one JSON object per line")
    if text_field not in obj:
        keys = ", ".join(sorted(obj)) or "none"
        raise DataError(f"{where}: no field '{text_field}' (fields: {keys}); set text_field to the field with the text")
    if not isinstance(obj[text_field], str):
        raise DataError(f"{where}: field '{text_field}' is {type(obj[text_field]).__name__}, not a string")
    extra = {key: value for key, value in obj.items() if key != text_field}
    clash = sorted(OUTPUT_FIELDS & extra.keys())
    if clash:
        raise DataError(f"{where}: field '{clash[0]}' would be overwritten by the output; rename it in the input")
    return InputRecord(text=obj[text_field], line=number, extra=extra)


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
    for done, batch in _length_batches(prompts, config.batch_size):
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
    for done, batch in _length_batches(encoded, config.batch_size):
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


def _length_batches(sequences: list[list[int]], batch_size: int) -> Any:
    """Yield (inputs done so far, indices) with similar lengths batched together, longest first."""
    order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))  # stable: ties keep input order
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        yield start + len(batch), batch


def _pad(batch: list[list[int]], pad_id: int, *, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(ids) for ids in batch)
    rows, masks = [], []
    for ids in batch:
        gap = width - len(ids)
        rows.append([pad_id] * gap + ids if left else ids + [pad_id] * gap)
        masks.append([0] * gap + [1] * len(ids) if left else [1] * len(ids) + [0] * gap)
    return torch.tensor(rows, dtype=torch.long), torch.tensor(masks, dtype=torch.long)


def _check_output_target(output: str) -> None:
    """Fail before the (slow) model run when the output cannot be written."""
    if output != "-" and Path(output).is_dir():
        raise DataError(f"{output}: is a directory; pass an output file name (e.g. predictions.jsonl) or '-'")


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
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with open(handle, "w", encoding="utf-8", newline="") as stream:
            _serialize(records, output_format, stream)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
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
