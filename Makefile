# Set-up and the two everyday commands. `make demo` and `make test` each install what they need
# first. torch is installed only when none is present: a CPU build where one is offered (as on
# our CI machine), otherwise whatever TORCH names (override it: make test TORCH='torch>=2.4').
PYTHON ?= python3
TORCH ?= torch==2.13.0

.PHONY: install demo test bench

install:
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install -q "$(TORCH)"
	$(PYTHON) -m pip install -q -e ".[test]"

demo: install
	$(PYTHON) -m layerwise demo

test: install
	$(PYTHON) -m pytest -q

bench: install
	$(PYTHON) benchmarks/bench_demo.py
