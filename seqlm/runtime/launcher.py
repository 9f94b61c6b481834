"""`seqlm pretrain|finetune|evaluate CONFIG --nproc N`: the same command as N processes on this machine.

It runs torch's elastic launcher, the engine behind `torchrun --standalone --nproc-per-node N`,
in this process. What it adds: the exit code is the first failed rank's, so seqlm's codes
(2 config, 3 data, 4 output, 130/143 stopped by a signal) keep their meaning, where torchrun
reports 1 for any failure; a stop signal sent to this process reaches every rank, which
checkpoints at the same step and exits; ranks still running `SHUTDOWN_TIMEOUT_S` later are killed.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import tempfile
import uuid
from typing import Any

from seqlm.runtime.distributed import LAUNCHED_NPROC

# How long ranks may take to finish their step and write a checkpoint after a stop signal
# (torchrun's own default is 30 s; TORCH_ELASTIC_SHUTDOWN_TIMEOUT sets it there).
SHUTDOWN_TIMEOUT_S = 300


def launch(nproc: int, argv: list[str], debug: bool = False) -> int:
    """Run `seqlm *argv` as `nproc` ranks on this machine; 0, or the exit code of the rank whose failure
    ended the run. The launcher's own log lines (which rank exited how) only with `debug`: the ranks
    say what went wrong, and a rank killed by a signal is named here."""
    from torch.distributed.elastic.multiprocessing.api import DefaultLogsSpecs, SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if not debug:  # torch's elastic modules give each logger its own level (LOGLEVEL, default WARNING)
        for name in list(logging.root.manager.loggerDict):
            if name.startswith("torch.distributed.elastic"):
                logging.getLogger(name).setLevel(logging.CRITICAL)
    # Ranks on one machine share its cores (torchrun itself would give each one thread).
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    os.environ[LAUNCHED_NPROC] = str(nproc)
    # The launcher's log directory (each rank's error.json) is one removed afterwards: by default
    # torch makes a /tmp/torchelastic_* directory per launch and never removes it.
    log_dir = tempfile.TemporaryDirectory(prefix="seqlm-launch-")
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=str(uuid.uuid4()),
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",  # a free port: several launches may share the machine
        max_restarts=0,
        monitor_interval=0.2,
        shutdown_timeout=SHUTDOWN_TIMEOUT_S,
        logs_specs=DefaultLogsSpecs(log_dir=log_dir.name),
    )
    try:
        with log_dir:
            elastic_launch(config, sys.executable)("-m", "seqlm", *argv)
    except ChildFailedError as exc:
        rank, failure = _root_cause(exc.failures)
        code = failure.exitcode
        if code < 0:  # killed by a signal: no rank could say so itself
            name = signal.Signals(-code).name if -code in set(signal.Signals) else f"signal {-code}"
            print(f"seqlm: error: rank {rank} (pid {failure.pid}) was killed by {name}; the other ranks were stopped", file=sys.stderr)
            return 128 - code  # as a shell reports it: 128 + N
        return code
    except SignalException as exc:
        return 128 + int(exc.sigval)
    return 0


# Exits that may be consequences: 1 (a collective lost its peer) and 130/143 (the launcher itself
# sends SIGTERM to the ranks left once one has failed; a stopped rank takes it when resumed).
_CONSEQUENTIAL = frozenset({1, 130, 143})


def _root_cause(failures: dict[int, Any]) -> tuple[int, Any]:
    """The failure that explains the others: a rank killed by a signal (its peers then fail with exit 1 as
    their collectives lose it), else one with a seqlm data/config/output code (2, 3, 4, ...), else the
    earliest; at the same second (the launcher's timestamps have 1 s resolution), a 1 before a 130/143."""

    def rank_of(item: tuple[int, Any]) -> tuple[bool, bool, float, bool]:
        failure = item[1]
        code = failure.exitcode
        return (code >= 0, code in _CONSEQUENTIAL, failure.timestamp, code != 1)

    return min(failures.items(), key=rank_of)


def strip_nproc(argv: list[str]) -> list[str]:
    """`argv` without `--nproc N` / `--nproc=N` (the ranks must not launch again)."""
    kept: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            kept.append(arg)
    return kept

