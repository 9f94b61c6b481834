"""`seqlm evaluate`: score a trained model with its task's metrics (`Task.evaluate`) and write metrics.json.

The task is the one whose head the model carries (config.json's architecture): perplexity for
causal LMs, masked-token loss/accuracy and pseudo-perplexity for masked LMs, accuracy/F1 and a
confusion matrix for classifiers, token accuracy and entity F1 for token classifiers.
The forward passes run under `precision` (`auto`: bf16 autocast where the hardware computes bf16
natively, see `seqlm.runtime.device.resolve_precision`); losses and scores are computed in fp32,
and metrics.json's `inference_precision` names the precision used.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from seqlm import tasks
from seqlm.config.inference import EvaluateConfig
from seqlm.console import Console
from seqlm.io.atomic_files import write_text_atomic
from seqlm.io.output_paths import check_output_dir, write_failure
from seqlm.metrics.report import print_metrics
from seqlm.models.loading import load_for_inference, remote_code_warning
from seqlm.runtime.device import Precision, resolve_precision, select_device
from seqlm.runtime.distributed import DEFAULT_TIMEOUT_S, joined, on_main


def run(config: EvaluateConfig, console: Console, json_output: bool = False) -> dict[str, Any]:
    """Under torchrun every rank holds the model and scores its share of the batches; rank 0
    gathers the scores and writes the same metrics.json one process would."""
    with joined(DEFAULT_TIMEOUT_S, config.device) as cluster:
        output_dir = config.output_dir or _default_output_dir(config.model)
        # Before the model runs: an unwritable output_dir is exit 4 at once.
        on_main(cluster, lambda: check_output_dir(output_dir))
        device = cluster.device_for(select_device(config.device))
        precision = Precision(device, resolve_precision(config.precision, device))
        if config.trust_remote_code:
            console.warn(remote_code_warning(config.model))
        loaded = load_for_inference(config.model, device, trust_remote_code=config.trust_remote_code)
        on_main(cluster, lambda: console.info(f"loaded {config.model} on {device.type} ({precision.name})"))
        task = tasks.for_head(loaded.head)
        # Which precision the figures were computed in (`precision: auto` depends on the machine); not
        # "precision", which token classifiers' entity scores use.
        metrics = {**task.evaluate(loaded, config, precision, device, console, cluster), "inference_precision": precision.name}
        on_main(cluster, lambda: _write_metrics(metrics, output_dir, console, json_output))
        return metrics


def _write_metrics(metrics: dict[str, Any], output_dir: Path, console: Console, json_output: bool) -> None:
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(output_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    except OSError as exc:
        failure = write_failure(exc, output_dir / "metrics.json")
        if failure is None:
            raise
        raise failure from exc
    console.info(f"metrics written to {output_dir / 'metrics.json'}")
    print_metrics(metrics, json_output)


def _default_output_dir(model: str) -> Path:
    """Beside a local model (a run's model/ → the run's eval/); for a hub id, ./eval/<id>."""
    path = Path(model)
    if path.is_dir():
        return path.resolve().parent / "eval"
    return Path("eval") / model.replace("/", "--")

