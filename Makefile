# Set-up and run targets. Each creates .venv when absent and installs the
# package with what the target needs; nothing is downloaded at run time.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export KERAS_BACKEND := tensorflow
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: install demo demo-folder demo-digits test bench experiments clean bazel bazel-test

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[cpu,cli,test,bench,examples]"
	touch $(STAMP)

install: $(STAMP)

# The main job: SimCLR (small ResNet, DCLW, 4 simulated replicas, synchronised BN) on
# Fashion-MNIST from Debian's dataset-fashion-mnist (installed here when missing), 3 epochs over
# the 60,000 training images (~7-11 min of training on 2 cores); prints the kNN accuracy next to
# raw pixels', writes plots and a SavedModel.
FASHION_MNIST := /usr/share/datasets/fashion-mnist
DEMO_OUT ?= runs/demo
demo: $(STAMP)
	test -d $(FASHION_MNIST) || apt-get install -y dataset-fashion-mnist \
		|| sudo apt-get install -y dataset-fashion-mnist
	$(PY) -m keras_contrast train --model simclr --loss dclw --dataset fashion_mnist \
		--epochs 3 --batch-size 256 --replicas 4 --norm sync --width 8 --temperature 0.2 \
		--out $(DEMO_OUT)

# The former demo: a minute on scikit-learn's digits.
# The same job through the streaming path: Fashion-MNIST written once as a folder of 70,000
# PNGs (runs/fashion_mnist_png, ~2 min), then read and decoded inside tf.data every epoch
# (keras_contrast.data.FolderSource) as users' own train/<class>/ folders are.
DEMO_FOLDER := runs/fashion_mnist_png

demo-folder: $(STAMP)
	test -d $(FASHION_MNIST) || apt-get install -y dataset-fashion-mnist \
		|| sudo apt-get install -y dataset-fashion-mnist
	test -d $(DEMO_FOLDER)/train || $(PY) tools/write_image_folder.py $(DEMO_FOLDER)
	$(PY) -m keras_contrast train --model simclr --loss dclw --dataset $(DEMO_FOLDER) \
		--channels 1 --epochs 3 --batch-size 256 --replicas 4 --norm sync --width 8 \
		--temperature 0.2 --out $(DEMO_OUT)_folder

demo-digits: $(STAMP)
	$(PY) examples/digits_demo.py

test: $(STAMP)
	$(PY) -m pytest -m "not slow" -n 2 --dist loadfile -q --durations=30

# Bazel: Debian's bazel-bootstrap (4.2; installed here when missing), offline, the tests run
# with .venv's Python (not hermetic; README "Bazel"). `bazel build //...`, then the BUILD check
# and the quick loss tests (~3 min on 2 cores); `make bazel-test BAZEL_TESTS=//...` runs all.
# BAZEL_FLAGS=--spawn_strategy=local where Bazel's sandbox cannot run.
BAZEL ?= bazel
BAZEL_FLAGS ?=
BAZEL_TESTS ?= //:build_test //:losses_bad_input_test //:losses_clip_test //:losses_dcl_test \
	//:losses_float64_test //:losses_info_nce_test //:losses_mocov3_test
bazel:
	command -v $(BAZEL) >/dev/null || apt-get install -y --no-install-recommends bazel-bootstrap \
		|| sudo apt-get install -y --no-install-recommends bazel-bootstrap

bazel-test: $(STAMP) bazel
	$(BAZEL) build $(BAZEL_FLAGS) //...
	$(BAZEL) test $(BAZEL_FLAGS) $(BAZEL_TESTS)

bench: $(STAMP)
	test -d $(FASHION_MNIST) || apt-get install -y dataset-fashion-mnist \
		|| sudo apt-get install -y dataset-fashion-mnist
	$(PY) benchmarks/loss_bench.py
	$(PY) benchmarks/batchnorm_bench.py
	$(PY) benchmarks/gradcache_bench.py
	$(PY) benchmarks/tiled_loss_bench.py
	$(PY) benchmarks/siglip_bench.py
	$(PY) benchmarks/input_pipeline.py
	$(PY) benchmarks/knn_memory.py
	$(PY) benchmarks/accelerator_bench.py --smoke --output benchmarks/results/accelerator_cpu_smoke.json

# The experiments of examples/ (full runs, ~150-170 min on 2 cores; tables and plots in
# examples/results/), then any test marked slow (pytest's exit 5: none collected).
EXPERIMENTS = bn_leak bn_leak_moco dcl_vs_infonce gradcache_equivalence mocov3_stability \
	precise_bn dual_encoder_wordnet siglip_vs_clip
experiments: $(STAMP)
	for name in $(EXPERIMENTS); do $(PY) examples/$$name.py || exit 1; done
	$(PY) examples/summarize.py
	$(PY) -m pytest -m slow -q || test $$? -eq 5

clean:
	rm -rf $(VENV) build *.egg-info
