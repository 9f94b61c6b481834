"""Where a seqlm command's resident memory grows: RSS steps with the Python stack that was running.

    .venv/bin/python scripts/profile_memory.py [--step MB] [--depth N] -- finetune configs/bench/bert_finetune.yaml --set ...

Runs the command in this process (as `seqlm ARGS...`) while a watcher thread reads /proc/self/status every
20 ms; each time RSS has grown by `--step` MB since the last report it prints the new figure and the innermost
`--depth` frames of the main thread's stack (the frames say who allocated: an import, the tokenizer, a layer's
forward, the optimizer, the evaluation pass). Native allocations show under the Python call that made them.
At the end: the peak (VmHWM) and the RSS when the command returned. Linux only.

This is how the fine-tuning benchmark's extra half gigabyte was found (README, Performance): growth inside the
forward and backward passes at every new batch width, which oneDNN's per-shape kernel cache holds.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
import traceback


def status_mb(key: str) -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1]) // 1024
    raise KeyError(key)


def watch(main_thread: int, step_mb: int, depth: int, started: float) -> None:
    reported = 0
    while True:
        rss = status_mb("VmRSS")
        if rss - reported >= step_mb:
            frame = sys._current_frames().get(main_thread)
            stack = traceback.extract_stack(frame)[-depth:] if frame is not None else []
            where = " < ".join(f"{os.path.basename(f.filename)}:{f.lineno} {f.name}" for f in reversed(stack))
            print(f"[{time.monotonic() - started:7.2f}s] RSS {reported:>6} -> {rss:>6} MB  {where}", file=sys.stderr, flush=True)
            reported = rss
        time.sleep(0.02)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--step", type=int, default=25, help="report each growth of this many MB (default 25)")
    parser.add_argument("--depth", type=int, default=4, help="innermost stack frames shown (default 4)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the seqlm command line, without `seqlm`")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the seqlm command after --, e.g. -- finetune CONFIG")

    started = time.monotonic()
    threading.Thread(target=watch, args=(threading.get_ident(), args.step, args.depth, started), daemon=True).start()
    from seqlm.cli import main as seqlm_main

    sys.argv = ["seqlm", *command]
    code = 0
    try:
        seqlm_main()
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 0
    print(f"peak RSS {status_mb('VmHWM')} MB, at the end {status_mb('VmRSS')} MB, exit code {code}", file=sys.stderr)
    sys.exit(code)


if __name__ == "__main__":
    main()
