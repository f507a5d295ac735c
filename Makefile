# speqmoe: make demo (the main job) and make test (the whole suite).
PYTHON_SYS ?= python3
VENV       := .venv
PY         := $(VENV)/bin/python
STAMP      := $(VENV)/.installed
JOBS       ?= 2
CONFIG     ?=
CONFIG_ARG := $(if $(CONFIG),--config $(CONFIG),)

.PHONY: setup demo test verilog sim synth fpga bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@command -v iverilog >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Icarus Verilog (apt-get install -y iverilog)"; \
	    (apt-get update -qq && apt-get install -y -qq iverilog) >/dev/null 2>&1 \
	      || echo "warning: could not install iverilog; Icarus tests will be skipped"; \
	  else echo "note: iverilog not found and not root; Icarus tests will be skipped"; fi; }
	test -x $(PY) || $(PYTHON_SYS) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	$(PY) -m pip install -q -e '.[train]' \
	  || echo "warning: torch (extra 'train') not installed; trainer tests will be skipped"
	touch $(STAMP)

demo: setup
	$(PY) -m speqmoe demo $(CONFIG_ARG)

test: setup
	OPENBLAS_NUM_THREADS=1 $(PY) -m pytest -n $(JOBS) --durations=15

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
