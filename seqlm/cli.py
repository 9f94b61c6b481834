"""The `seqlm` command line: a thin dispatcher from arguments to a validated config to a run.

Only typer, pydantic and yaml are imported here; torch, transformers and datasets are
imported by the run modules when a command actually runs, so `--help` stays instant.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from seqlm.errors import ExitCode, SeqlmError, first_line

app = typer.Typer(
    name="seqlm",
    help="Raw text to a trained, evaluated Transformer LM: tokenize → pretrain → finetune → evaluate → predict.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

ConfigArg = Annotated[Optional[Path], typer.Argument(help="YAML config (see configs/).", show_default=False)]
RequiredConfigArg = Annotated[Path, typer.Argument(help="YAML config (see configs/).", show_default=False)]
SetOpt = Annotated[
    Optional[list[str]],
    typer.Option("--set", "-s", help="Override a config key: --set training.max_steps=100 (repeatable).", show_default=False),
]
PrintConfigOpt = Annotated[bool, typer.Option("--print-config", help="Print the resolved config and exit.")]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and errors on stderr.")]
ResumeOpt = Annotated[
    bool, typer.Option("--resume", help="Continue from the newest complete checkpoint in output_dir (resume: always).")
]
OverwriteOpt = Annotated[
    bool, typer.Option("--overwrite", help="Delete the run already in output_dir and start afresh (else such a start is refused).")
]
NprocOpt = Annotated[Optional[int], typer.Option(
    "--nproc", min=1, help="Run as N processes on this machine (torchrun: DDP/FSDP, one per GPU or a share of the CPU cores).", show_default=False
)]  # fmt: skip
RunDirsArg = Annotated[list[Path], typer.Argument(help="Run directories (pretrain / finetune output_dir); the others' configs are compared against the first.", show_default=False)]
ReportOutputOpt = Annotated[Optional[Path], typer.Option("--output", "-o", help="The HTML file, its figures beside it as <name>-*.png (default: RUN_DIR/report.html for one run, ./report.html for several).", show_default=False)]
DeviceOpt = Annotated[Optional[str], typer.Option("--device", help="auto (cuda → mps → cpu), cpu, cuda or mps.", show_default=False)]


@app.command()
def tokenize(
    config: RequiredConfigArg,
    set_: SetOpt = None,
    print_config: PrintConfigOpt = False,
    debug: DebugOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Train (or load) a tokenizer and write a memory-mapped tokenized dataset."""
    _dispatch("tokenize", config, set_, {}, print_config, debug, quiet, None)


@app.command()
def pretrain(
    config: RequiredConfigArg,
    set_: SetOpt = None,
    device: DeviceOpt = None,
    resume: ResumeOpt = False,
    overwrite: OverwriteOpt = False,
    nproc: NprocOpt = None,
    print_config: PrintConfigOpt = False,
    debug: DebugOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Pretrain a causal (GPT-style) or masked (BERT-style) language model."""
    _dispatch("pretrain", config, set_, _run_options(device, resume, overwrite), print_config, debug, quiet, nproc)


@app.command()
def finetune(
    config: RequiredConfigArg,
    set_: SetOpt = None,
    device: DeviceOpt = None,
    resume: ResumeOpt = False,
    overwrite: OverwriteOpt = False,
    nproc: NprocOpt = None,
    print_config: PrintConfigOpt = False,
    debug: DebugOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Fine-tune a model for a task: text classification (labelled JSONL / CSV / Parquet), token classification (POS, NER: JSONL / CoNLL / CoNLL-U) or seq2seq (translation, summarization: source/target records)."""
    _dispatch("finetune", config, set_, _run_options(device, resume, overwrite), print_config, debug, quiet, nproc)


def _run_options(device: Optional[str], resume: bool, overwrite: bool) -> dict[str, Any]:
    if resume and overwrite:
        _fail("--resume continues the run in output_dir and --overwrite deletes it; pass one of them", ExitCode.USAGE)
    return _given(device=device, resume="always" if resume else None, overwrite=True if overwrite else None)


@app.command()
def evaluate(
    config: ConfigArg = None,
    model: Annotated[Optional[str], typer.Option(help="Model dir or hub id.", show_default=False)] = None,
    data: Annotated[Optional[Path], typer.Option(help="LMs: tokenized dataset dir or text file; classifiers: labelled JSONL/CSV/Parquet; token classifiers: tagged JSONL/CoNLL/CoNLL-U; seq2seq: source/target records.", show_default=False)] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print metrics as JSON on stdout.")] = False,
    set_: SetOpt = None,
    device: DeviceOpt = None,
    nproc: NprocOpt = None,
    print_config: PrintConfigOpt = False,
    debug: DebugOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Measure a model: perplexity (causal), masked-token loss/accuracy/pseudo-perplexity (masked), accuracy/F1/confusion matrix (classifiers), token accuracy / entity F1 (token classifiers), or loss, BLEU/chrF and ROUGE of generated outputs (seq2seq)."""
    given = _given(model=model, data=str(data) if data else None, device=device)
    _dispatch("evaluate", config, set_, given, print_config, debug, quiet, nproc, json_output=json_)


@app.command()
def predict(
    config: ConfigArg = None,
    model: Annotated[Optional[str], typer.Option(help="Model dir or hub id.", show_default=False)] = None,
    input_: Annotated[Optional[str], typer.Option("--input", "-i", help="Input file, '-' for stdin.", show_default=False)] = None,
    output: Annotated[Optional[str], typer.Option("--output", "-o", help="Output file, '-' for stdout.", show_default=False)] = None,
    top_k: Annotated[
        Optional[int], typer.Option("--top-k", help="Candidates per [MASK] / classes listed per input.", show_default=False)
    ] = None,
    skip_bad_lines: Annotated[
        bool, typer.Option("--skip-bad-lines", help="Skip (and list) lines that are not UTF-8 / valid JSON or CSV.")
    ] = False,
    stream: Annotated[
        bool, typer.Option("--stream", help="Predict each input as soon as it is read and print its record at once (interactive use, pipes).")
    ] = False,
    set_: SetOpt = None,
    device: DeviceOpt = None,
    print_config: PrintConfigOpt = False,
    debug: DebugOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Apply a model to a file of inputs: continuations (causal), [MASK] fills (masked), labels (classifiers), tags and entities (token classifiers) or generated outputs (seq2seq)."""
    # An unset flag is None, not False, so that it does not override skip_bad_lines: true in the YAML.
    given = _given(model=model, input=input_, output=output, top_k=top_k, skip_bad_lines=skip_bad_lines or None,
                   stream=stream or None, device=device)  # fmt: skip
    _dispatch("predict", config, set_, given, print_config, debug, quiet, None)


@app.command()
def report(run_dirs: RunDirsArg, output: ReportOutputOpt = None, debug: DebugOpt = False, quiet: QuietOpt = False) -> None:
    """Write an HTML report of runs: loss, learning rate and throughput against step (runs overlaid), final and best metrics, config differences, confusion matrix and per-class scores, sample predictions."""
    try:
        importlib.import_module("seqlm.commands.report").run(run_dirs, output, quiet)
    except Exception as exc:  # SeqlmError: its one line and code; anything else is a bug, its traceback behind --debug
        if debug:
            traceback.print_exc()
        known = isinstance(exc, SeqlmError)
        _fail(str(exc) if known else f"unexpected {type(exc).__name__}: {exc} (rerun with --debug for the traceback)",
              exc.exit_code if known else ExitCode.UNEXPECTED)  # fmt: skip


# The commands that run as several processes under torchrun (or --nproc).
DISTRIBUTED_COMMANDS = ("pretrain", "finetune", "evaluate")


def _given(**options: Any) -> dict[str, Any]:
    """Command-line options that were actually passed (they override the YAML file)."""
    return {key: value for key, value in options.items() if value is not None}


def _dispatch(
    command: str,
    config_path: Optional[Path],
    overrides: Optional[list[str]],
    options: dict[str, str],
    print_config: bool,
    debug: bool,
    quiet: bool,
    nproc: Optional[int],
    **run_kwargs: Any,
) -> None:
    from seqlm.config import COMMAND_SCHEMAS
    from seqlm.config.loading import load_config, to_yaml
    from seqlm.console import Console

    console = Console(quiet=quiet, silent=_rank() > 0)
    _quiet_hf_libraries(debug)
    try:
        config = load_config(COMMAND_SCHEMAS[command], config_path, list(overrides or []), options)
        if print_config:
            sys.stdout.write(to_yaml(config))
            raise typer.Exit(ExitCode.OK)
        if _world_size() > 1 and command not in DISTRIBUTED_COMMANDS:
            # Every rank would do the whole job and write the same outputs.
            if _rank() > 0:
                raise typer.Exit(ExitCode.USAGE)
            _fail(f"seqlm {command} runs as one process; run it without torchrun", ExitCode.USAGE)
        if nproc is not None and "WORLD_SIZE" in os.environ:
            _fail("--nproc starts torchrun itself; under torchrun, leave it out", ExitCode.USAGE)
        if nproc is not None and nproc > 1:  # the config is valid: now start the ranks, each of which reads it again
            from seqlm.runtime.launcher import launch, strip_nproc

            raise typer.Exit(launch(nproc, strip_nproc(sys.argv[1:]), debug))
        module = importlib.import_module(f"seqlm.commands.{command}")
        module.run(config, console, **run_kwargs)
        if _world_size() > 1:
            _leave_rank()
    except typer.Exit:
        raise
    except SeqlmError as exc:
        if debug:
            traceback.print_exc()
        if exc.exit_code == ExitCode.OK:  # NothingToDo: information (rank 0 speaks), not an error
            console.outcome(str(exc))
            _exit(ExitCode.OK)
        if exc.reported_by_rank_0:  # rank 0 has said it: the others exit with its code, silently
            _exit(exc.exit_code)
        _fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        _fail("interrupted", ExitCode.INTERRUPTED)
    except OSError as exc:  # a disk that fills up anywhere in a run: exit 4, not a "bug"
        from seqlm.errors import SPACE_ERRNOS
        from seqlm.io.output_paths import write_failure

        if debug:
            traceback.print_exc()
        known = write_failure(exc, exc.filename or "an output file") if exc.errno in SPACE_ERRNOS else None
        if known is None:
            _fail(f"unexpected {type(exc).__name__}: {exc} (rerun with --debug for the traceback)", ExitCode.UNEXPECTED)
        _fail(str(known), ExitCode.OUTPUT)
    except Exception as exc:  # a bug, not a user error: say so, keep the traceback behind --debug
        if debug:
            traceback.print_exc()
        if _world_size() > 1:  # most often a collective that lost a rank
            _fail(
                f"{type(exc).__name__}: {first_line(exc)} (if another rank of the run failed or was stopped, its message says why; "
                "rerun with --debug for the traceback)",
                ExitCode.UNEXPECTED,
            )
        _fail(f"unexpected {type(exc).__name__}: {exc} (rerun with --debug for the traceback)", ExitCode.UNEXPECTED)


def _quiet_hf_libraries(debug: bool) -> None:
    """Set before transformers/datasets are imported: seqlm reports progress itself, on its own terms."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    if not debug:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("DATASETS_VERBOSITY", "error")


def _rank() -> int:
    """This process's rank under torchrun (0 outside it): read from the environment, without importing torch."""
    return _env_int("RANK", 0)


def _world_size() -> int:
    """The number of processes of a torchrun job (1 outside it)."""
    return _env_int("WORLD_SIZE", 1)


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, str(default)))
    except ValueError:
        return default


def _fail(message: str, code: ExitCode) -> None:
    first_line = message.strip().splitlines()[0] if message.strip() else type(code).__name__
    where = f"[rank {_rank()}] " if _rank() > 0 else ""
    print(f"seqlm: error: {where}{first_line}", file=sys.stderr, flush=True)
    _exit(code)


def _exit(code: ExitCode) -> None:
    """End with `code`. A failed rank of a torchrun job ends at once (os._exit): tearing down its process
    group while a peer may still use it can abort the process (gloo), which would replace the code by 134."""
    distributed = sys.modules.get("torch.distributed")
    if distributed is not None and distributed.is_available() and distributed.is_initialized():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(int(code))
    raise typer.Exit(int(code))


def _leave_rank() -> None:
    """A torchrun rank whose run ended well (outputs written, process group closed) ends at once, without
    the interpreter's teardown: there, a native thread pool still running (likely pyarrow's, which the
    metric libraries load) now and then aborted a rank of a run that had succeeded (std::terminate, exit
    134, after the last message; about 1 in 10 seq2seq runs of 2 ranks with generation, none without)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(int(ExitCode.OK))


def main() -> None:
    # One program name however started (`seqlm`, `python -m seqlm`): shell completion scripts name it.
    app(prog_name="seqlm")
