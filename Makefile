# make demo: the offline quickstart run.  make test: the test suite.
# make demo-text: the offline text (BERT) run.
# Both create .venv and install tl_keras into it on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo demo-text test install clean

$(BIN)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/python main.py --flagfile=flags/quickstart.flags --output_dir=runs/quickstart --overwrite

demo-text: install
	$(BIN)/python main.py --flagfile=flags/quickstart_text.flags --output_dir=runs/quickstart_text --overwrite

test: install
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs
