# ATOM-GPT: two commands for a newcomer.
#   make demo   set up .venv (if needed) and run the whole pipeline headless on the public-domain corpus
#   make test   set up the same way and run the whole test suite, notebooks included (nbval)
#
# Inside an environment of your own (an active venv or conda env) everything installs there
# instead of .venv/. GPU users: `make demo TORCH_INDEX=https://download.pytorch.org/whl/cu128`.

PYTHON      ?= python3
TORCH_SPEC  ?= torch==2.13.0
TORCH_INDEX ?=
OWN_ENV     := $(or $(VIRTUAL_ENV),$(CONDA_PREFIX))

ifeq ($(OWN_ENV),)
  ENV_DIR := .venv
else
  ENV_DIR := $(OWN_ENV)
endif
BIN       := $(ENV_DIR)/bin
STAMP     := $(ENV_DIR)/.atom-installed
DEV_STAMP := $(ENV_DIR)/.atom-dev-installed

.PHONY: setup setup-dev demo test test-fast chromium clean-data clean-outputs

# atomlib and what the notebooks need (the notebooks extra: JupyterLab, papermill)
setup: $(STAMP)

$(STAMP): pyproject.toml
	@if [ ! -x "$(BIN)/python" ]; then echo "creating $(ENV_DIR)"; $(PYTHON) -m venv $(ENV_DIR); fi
	$(BIN)/python -m pip install --upgrade pip >/dev/null
	# torch first and pinned: a loose requirement would pull a multi-GB CUDA build on a CPU machine
	$(BIN)/python -m pip install "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install -e ".[notebooks]"
	@touch $(STAMP)

# the same, plus the dev extra: pytest, nbval, hypothesis, pexpect, playwright
setup-dev: $(DEV_STAMP)

$(DEV_STAMP): $(STAMP)
	$(BIN)/python -m pip install -e ".[dev]"
	@touch $(DEV_STAMP)

# The pipeline, headless: each numbered notebook executed by papermill with its defaults,
# executed copies written to outputs/notebooks/. Data comes from $$ATOM_MIRROR, else
# ../shared/corpus when present, else the pinned URLs.
demo: setup
	@mkdir -p outputs/notebooks
	@for nb in 01_scrape_clean 02_prepare 03_train 04_evaluate 05_sample 06_chat; do \
	  echo "== $$nb"; \
	  $(BIN)/papermill --cwd notebooks notebooks/$$nb.ipynb outputs/notebooks/$$nb.ipynb --log-output --no-progress-bar >/dev/null || exit 1; \
	done
	@echo "demo done: executed notebooks in outputs/notebooks/, the run in outputs/runs/"
	$(BIN)/atom sample --num-samples 1 --max-new-tokens 300 --seed 7

# Debian's chromium for the browser test; installed when missing and apt-get can (root, as in CI).
chromium:
	@if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || echo "could not install chromium; the browser test will skip"; fi

# The whole suite: unit and integration tests, then every notebook under nbval in smoke mode
# (ATOM_SMOKE=1 shrinks the notebooks' work; the cells and code paths are the same).
test: setup-dev chromium
	ATOM_SMOKE=1 $(BIN)/python -m pytest tests notebooks --nbval-lax -p no:cacheprovider

test-fast: setup-dev
	$(BIN)/python -m pytest tests -m "not slow and not browser" -p no:cacheprovider

clean-data:
	rm -rf data/raw data/interim data/processed

clean-outputs:
	rm -rf outputs/runs outputs/notebooks outputs/browser
