# Set-up and run targets. Each creates .venv when absent and installs the
# package with what the target needs; nothing is downloaded at run time.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export KERAS_BACKEND := tensorflow
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: install demo test bench experiments clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[cpu,cli,test,bench,examples]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) examples/digits_demo.py

test: $(STAMP)
	$(PY) -m pytest -m "not slow" -n 2 --dist loadfile -q

bench: $(STAMP)
	$(PY) benchmarks/loss_bench.py
	$(PY) benchmarks/batchnorm_bench.py
	$(PY) benchmarks/gradcache_bench.py

# Slow experiments (issue 7 adds them); pytest's exit 5 means none are collected yet.
experiments: $(STAMP)
	$(PY) -m pytest -m slow -q || test $$? -eq 5

clean:
	rm -rf $(VENV) build *.egg-info
