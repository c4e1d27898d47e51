# README's two commands: `make demo` and `make test`. Both create .venv and install on first use.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.vidnl-installed
T0     := $(shell date +%s)

.PHONY: install demo test bench clean-demo

$(STAMP): setup.py
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) data_prep/make_synthetic_motion.py --out data/synthetic_motion
	$(PY) tools/run_net.py --cfg configs/Synthetic/I3D_R18_SNL.yaml
	@echo "make demo: $$(( $$(date +%s) - $(T0) )) s in all (install on first use, data, training, test)"

test: $(STAMP)
	$(PY) -m pytest -q tests

# Side-by-side benchmarks (about 10 minutes on 2 CPU cores); tables on stdout and JSON in
# benchmarks/results/.
bench: $(STAMP)
	$(PY) benchmarks/nonlocal_blocks.py --repeat 1
	$(PY) benchmarks/data_loading.py
	@if [ -f benchmarks/reid_eval.py ]; then $(PY) benchmarks/reid_eval.py; fi

clean-demo:
	rm -rf data/synthetic_motion output/synthetic_i3d_r18_snl
