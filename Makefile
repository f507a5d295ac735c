# speqmoe: make demo (the main job) and make test (the whole suite).
PYTHON_SYS ?= python3
VENV       := .venv
PY         := $(VENV)/bin/python
STAMP      := $(VENV)/.installed
TRAIN_STAMP := $(VENV)/.installed-train
FUSESOC_STAMP := $(VENV)/.installed-fusesoc
JOBS       ?= 2
CONFIG     ?=
CONFIG_ARG := $(if $(CONFIG),--config $(CONFIG),)

.PHONY: setup setup-train setup-test demo test verilog sim synth fpga bench clean

# The interpreter check runs every time: a .venv made by another Python is rebuilt.
setup:
	@$(PYTHON_SYS) speqmoe/venv_check.py $(VENV)
	@$(MAKE) --no-print-directory -s $(STAMP)

$(STAMP): pyproject.toml
	@echo "installing speqmoe and its pinned dependencies into $(VENV) (minutes on a fresh machine)"
	@command -v iverilog >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Icarus Verilog (apt-get install -y iverilog)"; \
	    (apt-get update -qq && apt-get install -y -qq iverilog) >/dev/null 2>&1 \
	      || echo "warning: could not install iverilog; Icarus tests will be skipped"; \
	  else echo "note: iverilog not found and not root; Icarus tests will be skipped"; fi; }
	test -x $(PY) || $(PYTHON_SYS) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@# setuptools prints a page-long advisory on every editable install; nothing to act on.
	PYTHONWARNINGS=ignore $(PY) -m pip install -q -e .
	touch $(STAMP)

# torch (the optional extra 'train') only for the trainer and its tests, not for make demo.
setup-train: setup
	@$(MAKE) --no-print-directory -s $(TRAIN_STAMP)

$(TRAIN_STAMP): $(STAMP)
	@echo "installing the optional extra 'train' (torch, CPU build) for the trainer tests"
	PYTHONWARNINGS=ignore $(PY) -m pip install -q -e '.[train]' \
	  || echo "warning: torch (extra 'train') not installed; trainer tests will be skipped"
	touch $(TRAIN_STAMP)

# make test also installs FuseSoC (the optional extra 'fusesoc') to check the generated cores.
setup-test: setup-train
	@$(MAKE) --no-print-directory -s $(FUSESOC_STAMP)

$(FUSESOC_STAMP): $(STAMP)
	@echo "installing the optional extra 'fusesoc' (FuseSoC) for the core-file tests"
	PYTHONWARNINGS=ignore $(PY) -m pip install -q -e '.[fusesoc]' \
	  || echo "warning: fusesoc (extra 'fusesoc') not installed; FuseSoC tests will be skipped"
	touch $(FUSESOC_STAMP)

demo: setup
	$(PY) -m speqmoe demo $(CONFIG_ARG)

test: setup-test
	OPENBLAS_NUM_THREADS=1 $(PY) -m pytest -n $(JOBS) --dist worksteal --durations=15

verilog: setup
	$(PY) -m speqmoe verilog $(CONFIG_ARG)

sim: setup
	$(PY) -m speqmoe sim $(CONFIG_ARG)

synth: setup
	$(PY) -m speqmoe synth $(CONFIG_ARG)

fpga: setup
	$(PY) -m speqmoe fpga $(CONFIG_ARG)

bench: setup
	$(PY) -m speqmoe bench $(CONFIG_ARG)

clean:
	rm -rf build sim_build .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
