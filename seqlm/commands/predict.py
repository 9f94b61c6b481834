"""`seqlm predict`: apply a model to a file of inputs and write one record per input.

Inputs (text lines, JSONL, CSV or stdin; bad lines fail or, with `skip_bad_lines`, are skipped and
listed at the end) are read by `seqlm.io.predict_inputs`; see its docstring for the rules. Blank inputs
(a text file's empty or whitespace-only lines) get records too, and a warning lists their lines. Fields passed
through from jsonl/csv inputs come first in each record.

Records, always in input order (batches are formed by length internally), are what the model's
task writes (`Task.predict`, the task found from the head in the model's config.json): continuations
(`seqlm.tasks.causal_lm`), [MASK] fills (`seqlm.tasks.masked_lm`), labels with probabilities
(`seqlm.tasks.classification_predict`), tags and entities per word (`seqlm.tasks.token_classification`).
A passed-through field named like an output field is renamed "input_<name>" where the task allows it
(classifiers: e.g. a gold "label" column), else it is a DataError.
Chat inputs (jsonl "messages") go only to tasks that take them (`Task.takes_messages`: generation), else DataError.
`--stream` (`stream: true`): the model loads first, then each text/jsonl input is predicted alone as soon as its
line is read and its record printed to stdout at once, for interactive use and pipes (no batching across inputs).
The model runs under `precision` (`auto`: bf16 autocast where the hardware computes bf16 natively, see
`seqlm.runtime.device.resolve_precision`; the loading line on stderr names it); probabilities and scores are
computed in fp32 from the logits.
Output is JSON Lines, or CSV with nested fields as JSON strings (`output_format`, or auto: .csv
files are CSV). Files are written atomically; stdout carries only the records, logs go to stderr.
An output that cannot be written (a directory, under a file, not writable, disk full) is an OutputError
(exit 4), checked before the inputs are read when possible; no partial file is left.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from seqlm import tasks
from seqlm.config.inference import PredictConfig
from seqlm.console import Console
from seqlm.errors import ConfigError, DataError
from seqlm.io.output_paths import check_output_file
from seqlm.io.predict_inputs import InputRecord, Inputs, read_inputs, stream_inputs
from seqlm.io.record_writer import write_records
from seqlm.models.loading import load_for_inference, remote_code_warning
from seqlm.runtime.device import Precision, resolve_precision, seed_everything, select_device
from seqlm.tasks.task import Task

__all__ = ["InputRecord", "read_inputs", "run", "write_records"]


def run(config: PredictConfig, console: Console) -> dict[str, Any]:
    """Predict for every input of `config.input`, write the records, return a summary dict."""
    if config.stream:
        return _run_streamed(config, console)
    _check_output_target(config.output)
    inputs = read_inputs(config.input, config.input_format, config.text_field, console,
                         text_pair_field=config.text_pair_field, skip_bad_lines=config.skip_bad_lines,
                         words_field=config.words_field)
    records = inputs.records
    loaded, task, precision = _load(config, console)
    _check_pass_through(inputs, task, console)
    _check_messages(inputs, task, loaded)
    seed_everything(config.seed)
    start = time.monotonic()
    with console.progress("predict", total=len(records), unit="inputs") as progress:
        predictions = task.predict(loaded, records, config, precision, progress.update)
    elapsed = max(time.monotonic() - start, 1e-9)
    write_records([{**rec.extra, **res} for rec, res in zip(records, predictions.results)], config.output, config.output_format)
    for warning in filter(None, [inputs.blank_message(), *predictions.warnings]):
        console.warn(warning)
    if inputs.skipped:
        console.warn(inputs.skipped_message())
    rate = len(records) / elapsed
    console.info(f"predicted {len(records)} inputs in {elapsed:.1f}s ({rate:.1f} inputs/s) ({task.name})")
    return {"n_inputs": len(records), "n_warnings": len(predictions.warnings), "n_skipped": len(inputs.skipped),
            "seconds": elapsed, "inputs_per_s": rate, "objective": task.name, "output": config.output, "precision": precision.name}


def _load(config: PredictConfig, console: Console) -> tuple[Any, Any, Precision]:
    """The model on its device, its task (which has checked the config's settings) and the resolved precision."""
    device = select_device(config.device)
    precision = Precision(device, resolve_precision(config.precision, device))
    console.info(f"loading {config.model} on {device.type} ({precision.name})")
    if config.trust_remote_code:
        console.warn(remote_code_warning(config.model))
    loaded = load_for_inference(config.model, device, trust_remote_code=config.trust_remote_code)
    task = tasks.for_head(loaded.head)
    task.check_predict(config, loaded)
    return loaded, task, precision


def _run_streamed(config: PredictConfig, console: Console) -> dict[str, Any]:
    """`--stream`: the model is loaded first, then each input is predicted alone as soon as its line is read, and its
    record written to stdout and flushed (JSON Lines, input order), so a reader sees it before the next line comes."""
    if config.output != "-":
        raise ConfigError(f"--stream prints records to stdout as they finish; drop output ({config.output}) or set it to '-'")
    loaded, task, precision = _load(config, console)
    seed_everything(config.seed)
    inputs = Inputs(name="<stdin>" if config.input == "-" else config.input, skip_bad_lines=config.skip_bad_lines)
    start, count = time.monotonic(), 0
    for record in stream_inputs(config.input, config.input_format, config.text_field, console, inputs):
        one = Inputs(inputs.name, records=[record])
        _check_pass_through(one, task, console)
        _check_messages(one, task, loaded)
        predictions = task.predict(loaded, [record], config, precision, lambda done: None)
        write_records([{**record.extra, **predictions.results[0]}], "-", "jsonl")
        for warning in predictions.warnings:
            console.warn(f"{inputs.name}:{record.line}: {warning}")
        count += 1
    if inputs.skipped:
        console.warn(inputs.skipped_message())
    elapsed = max(time.monotonic() - start, 1e-9)
    console.info(f"predicted {count} inputs in {elapsed:.1f}s, streamed ({task.name})")
    return {"n_inputs": count, "n_skipped": len(inputs.skipped), "seconds": elapsed, "objective": task.name, "output": "-",
            "precision": precision.name}


def _check_messages(inputs: Inputs, task: Task, loaded: Any) -> None:
    """Chat inputs only go to tasks that render them (`Task.takes_messages`); others would read only the last message."""
    if not task.takes_messages:
        for record in inputs.records:
            if record.messages is not None:
                raise DataError(f"{inputs.name}:{record.line}: a messages input is for generation models; {loaded.path} is a "
                                f"{task.name} model: give its text in text_field")  # fmt: skip


def _check_pass_through(inputs: Inputs, task: Task, console: Console) -> None:
    """Passed-through fields must not collide with the output's: renamed input_<name> where the task allows, else refused."""
    renamed: set[str] = set()
    for record in inputs.records:
        for key in sorted(task.output_fields & record.extra.keys()):
            where = f"{inputs.name}:{record.line}: field '{key}'"
            new = f"input_{key}"
            if not task.rename_clashes:
                raise DataError(f"{where} would be overwritten by the output; rename it in the input")
            if new in record.extra or new in task.output_fields:
                raise DataError(f"{where} clashes with the output, and '{new}' is taken too; rename it in the input")
            record.extra[new] = record.extra.pop(key)
            renamed.add(key)
    if renamed:
        names = ", ".join(f"'{key}' as 'input_{key}'" for key in sorted(renamed))
        console.info(f"input fields named like output fields are passed through renamed: {names}")


def _check_output_target(output: str) -> None:
    """Fail (OutputError, exit 4) before the inputs are read and the model runs when the output cannot be written."""
    if output != "-":
        check_output_file(Path(output), "output")
