"""Side-by-side benchmark: seqlm against the Hugging Face path for the same models, configs and data.

    .venv/bin/python scripts/bench.py [--quick] [--json PATH] [--only TASK,...]     (or `make bench`)

Tasks (`--only` names): tokenize (MB/s, plus the scaling check: the corpus repeated `scale`×
must take `scale`× the time at flat peak RSS), clm and mlm (pretraining, tokens/s, HF Trainer
fp32 and bf16), finetune (classification, examples/s against four HF Trainer variants:
run_glue-style padding to max_length; dynamic padding + group_by_length in fp32 and bf16;
dynamic padding in random order, fp32; plus the accuracy check below), predict
(classification, examples/s and the share of equal labels against
`pipeline("text-classification")` with its defaults (fp32): seqlm with its default `precision: auto`
and with fp32; see `bench_inference`), evaluate (tokens/s and perplexity of the clm benchmark's
GPT-2 on its validation split, precision auto and fp32: run it with or after clm), seq2seq (training a small T5 from scratch on es→en, source
tokens/s against Seq2SeqTrainer fp32 in random order: Trainer's defaults), generate (translating
with that T5 trained 400 steps, untimed, examples/s of `seqlm predict` against the loop of the
text2text-generation pipeline, which transformers 5 removed: batches of 32 in input order, fp32;
greedy in fp32 and with precision auto, and 4 beams, with the share of equal outputs; see
`bench_seq2seq`), qa (extractive QA on XQuAD-en from the benchmark BERT: training windows/s against
`Trainer` as run_qa.py trains, and questions/s of `seqlm predict` against the loop of
`pipeline("question-answering", batch_size=32)`, which transformers 5 removed, with the share of equal
answers; see `bench_qa`), llm (SmolLM2-135M-Instruct, the `llm` extra: LoRA fine-tuning tokens/s and peak RSS against
HF Trainer + peft with the same adapters, generated tokens/s of `seqlm predict` against
`pipeline("text-generation", batch_size=8)`, greedy, with the share of equal outputs; see `bench_llm`),
help (`seqlm --help` wall time).

Method: every measured run is its own process, so its peak RSS is its own (`os.wait4`; the
largest resident set of the process or of any child it waited for, not their sum). Throughput
leaves out a warm-up: the first optimizer steps (seqlm: its metrics.jsonl log windows, see
`bench_seqlm`; HF: a TrainerCallback's step times, see `bench_hf`) or, for predict, a warm-up
call on the first batch, on both sides (seqlm's run through `bench_seqlm.py predict`, which runs
seqlm's predict on the first batch and then on all the inputs in one process; its rate is the
second run's own summary). Both sides are measured on the same steps. Pretraining (seqlm
and Trainer fp32) and predict run twice per side (alternating) and keep each side's fastest
run and largest peak RSS: whole runs on this VM vary by up to ±15%, more than the windows
inside a run. seqlm runs with its
config defaults (what a user gets), from the configs in configs/bench/; the HF side builds its
model from the same config files and uses the tokenizer files seqlm trained. Everything is
offline and writes under runs/bench/ (logs in runs/bench/logs/).

Fine-tuning starts from the benchmark BERT as initialised (seeded, untrained; written by the
preparation with seqlm's own model builder), not from the mlm benchmark's model: the few
hundred masked-LM steps a benchmark can afford only reach the unigram plateau (loss ~6.2),
whose collapsed representations fine-tune worse than the initialisation (measured with seqlm,
200 steps: test accuracy 0.29 after 14 MLM steps, 0.23 after 300, 0.49 from the initialisation).

Accuracy check: seqlm and the two HF dynamic-padding fp32 variants train
`finetune_accuracy_steps` (default 200, about 1.2 epochs) instead of the short runs' warm-up +
measured steps, and their throughput is that of every step after the warm-up: about an epoch,
so both sides' figures cover the same examples whatever order their samplers draw them in (a
25-step window of length-grouped batches measures whichever lengths it happened to draw). The
short runs (padding to max_length, whose rate does not depend on the lengths; bf16) are
measured on steps warm-up+1 .. warm-up+measured.
Printed as `test acc seqlm X vs HF Y (chance 1/labels)`, HF being dynamic padding in random
order: HF's group_by_length sorts each mega-batch of 50 batches longest first without
shuffling the batches, and in this data verse length tracks the label (wisdom verses are
short), so its batches sweep through the classes and it stays near chance in 200 steps
(seqlm's group_by_length shuffles the sorted batches). The by-length variant's accuracy is
printed below it.

Plans: the default runs the issue's sizes (GPT-2 4x256, seq 256, batch 8; BERT 4x256, seq 128,
batch 16; classification batch 32, max_length 128) for a few dozen steps each, plus the 200-step
accuracy runs: about 7 to 8 minutes on a quiet 2-core CPU; the seq2seq rows (T5 width 256, 2+2 layers,
batch 32, sources and targets up to 128 tokens: 5 warm-up + 30 measured steps per run; then the 435
validation sources, at most 64 new tokens, greedy, greedy bf16 and 4 beams, with a 400-step model
trained for them first) add a few minutes more (not yet timed on a
quiet machine); the qa rows (seqlm 200 steps, HF 30, both measured on steps 6-30; then the 148 test
questions, twice per side) a few more. `--quick` is a smoke check of every path in about 2 to 3 minutes: tiny models (a T5 of
width 32), a few steps (the accuracy runs too), 40 validation examples, a 6-step generation model and 40 inputs to generate for,
QA windows of 64 tokens, 6 steps and 40 questions,
the corpus 2x instead of 10x, and no HF bf16 rows; its figures mean nothing. bf16 rows say so when the CPU only
emulates bf16 (no AVX512-BF16/AMX; torch still runs it).

Output: one table (task | HF variant | seqlm | HF | seqlm/HF | peak RSS of each | note, where
"HF best" marks each task's fastest HF variant), the scaling check, the accuracy check, and
with `--json` every figure, `hf_best` per task, `accuracy`, and the machine (its load
average: the figures are only as quiet as the machine was; and its matmul ceiling, fp32 and
bf16 GFLOP/s, measured first: every ratio sits under it); see `bench_report`. A
sub-benchmark that fails prints its error and the rest still run; the exit status is then 1,
also when seqlm's and the pipeline's labels (or QA answers) differ on more than 1% of the inputs (either precision)
or precision auto's perplexity is more than 1% from fp32's. Under the table: the agreement of
`precision: auto` with fp32 (labels, perplexity, greedy outputs; see `bench_report.render_agreement`),
then the CPU model and whether its bf16 is native, emulated or none. Nothing is
asserted about speed or accuracy.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import bench_inference
import bench_llm
import bench_qa
import bench_report
import bench_seq2seq
import bench_tasks
from bench_core import WORK, Bench, Plan, fresh

TASKS = ("tokenize", "clm", "mlm", "finetune", "predict", "evaluate", "seq2seq", "generate", "qa", "llm", "help")
# A tiny model for --quick: a smoke check of every path, not a speed figure.
TINY_MODEL = ["model.n_layers=2", "model.n_heads=2", "model.d_model=64", "model.max_len=64", "training.seq_len=64"]
TINY_T5 = ["model.d_model=32", "model.n_heads=2", "model.d_ff=64", "training.max_source_length=48", "training.max_target_length=48",
           "training.eval_generate_examples=4", "generation.max_new_tokens=8"]  # fmt: skip

PLANS = {
    "default": Plan("default", pretrain_warmup=2, pretrain_measured=12, repeats=2, finetune_warmup=5, finetune_measured=25,
                    finetune_accuracy_steps=200, scale=10, help_runs=7, timeout_s=420),
    "quick": Plan("quick", pretrain_warmup=2, pretrain_measured=4, repeats=1, finetune_warmup=2, finetune_measured=6,
                  finetune_accuracy_steps=8, scale=2, help_runs=3, timeout_s=300, hf_bf16=False,
                  pretrain_overrides=TINY_MODEL, finetune_overrides=["training.max_length=64"],
                  seq2seq_warmup=2, seq2seq_measured=4, seq2seq_overrides=TINY_T5, seq2seq_validation=40, generate_model_steps=6, generate_inputs=40,
                  generate_overrides=["generation.max_new_tokens=12"], qa_warmup=2, qa_measured=4, qa_model_steps=6, qa_questions=40,
                  qa_overrides=["training.max_length=64", "qa.doc_stride=16"], qa_predict_overrides=["max_length=64", "qa.doc_stride=16"],
                  llm_warmup=2, llm_measured=2, llm_generate_inputs=8, llm_overrides=["training.max_length=96"]),
}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke check (tiny models, a few steps): figures mean nothing")
    parser.add_argument("--json", type=Path, help="also write every figure and the machine to this file")
    parser.add_argument("--only", help=f"comma-separated subset of: {', '.join(TASKS)}")
    args = parser.parse_args()
    only = set(args.only.split(",")) if args.only else set(TASKS)
    if only - set(TASKS):
        parser.error(f"--only: unknown task(s) {', '.join(sorted(only - set(TASKS)))}; known: {', '.join(TASKS)}")

    machine = bench_report.machine_info()
    machine["matmul_gflops"] = bench_report.matmul_gflops()
    bench = Bench(PLANS["quick" if args.quick else "default"], bench_report.bf16_support(machine))
    bench.say(f"plan {bench.plan.name}: {machine['cpus_usable']} CPUs, bf16 {bench.bf16}, load average {machine['load_average_at_start']}, "
              f"{bench_report.render_matmul(machine['matmul_gflops'])}")
    WORK.mkdir(parents=True, exist_ok=True)
    fresh(WORK / "hf-cache")
    bench_tasks.prepare(bench, only)
    bench_seq2seq.prepare(bench, only)
    llm_skipped = bench_llm.prepare(bench, only)
    rows: list[bench_report.Row] = []
    scaling: dict[str, Any] | None = None
    accuracy: dict[str, Any] | None = None
    if "tokenize" in only:
        tokenize_rows, scaling = bench_tasks.bench_tokenize(bench)
        rows += tokenize_rows
    for objective in ("clm", "mlm"):
        if objective in only:
            rows += bench_tasks.bench_pretrain(bench, objective)
    if "finetune" in only:
        finetune_rows, accuracy = bench_tasks.bench_finetune(bench)
        rows += finetune_rows
    if "predict" in only:
        rows += bench_inference.bench_predict(bench)
    if "evaluate" in only:
        rows += bench_inference.bench_evaluate(bench)
    if "seq2seq" in only:
        rows += bench_seq2seq.bench_seq2seq(bench)
    if "generate" in only:
        rows += bench_seq2seq.bench_generate(bench)
    if "qa" in only:
        rows += bench_qa.bench_qa(bench)
    if "llm" in only:
        rows += bench_llm.bench_lora(bench, llm_skipped) + bench_llm.bench_llm_generate(bench, llm_skipped)
    if "help" in only:
        rows += bench_tasks.bench_help(bench)
    total_s = time.perf_counter() - bench.started

    bench_report.mark_hf_best(rows)
    print(bench_report.render_table(rows))
    if scaling is not None:
        print("\n" + bench_report.render_scaling(scaling))
    if accuracy is not None:
        print("\n" + bench_report.render_accuracy(accuracy))
    agreement = bench_report.render_agreement(rows, bench.bf16)
    if agreement is not None:
        print("\n" + agreement)
    print(f"\n{bench.plan.name} plan, {total_s:.0f} s in all; {machine['cpus_usable']} CPUs ({machine['cpu_model']}, bf16 {bench.bf16}), "
          f"torch {machine['torch']}, load average at start {machine['load_average_at_start'][0]:.2f}, "
          f"{bench_report.render_matmul(machine['matmul_gflops'])}")
    for failure in bench.failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    if args.json is not None:
        machine["load_average_at_end"] = os.getloadavg()
        document = bench_report.report(bench.plan, machine, total_s, rows, scaling, accuracy, bench.failures)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return 1 if bench.failures else 0


if __name__ == "__main__":
    sys.exit(main())
