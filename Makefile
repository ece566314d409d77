# `make run` and `make test` are all a person types on a fresh machine:
# both set up the virtualenv (and OpenBLAS on Debian/Ubuntu) first.
VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
HOST    ?= 127.0.0.1
PORT    ?= 5000
DEMO_DIR ?= .cache/demo

.PHONY: setup system-deps run dev worker test test-load demo clean

setup: $(STAMP) system-deps

$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps --editable .
	@touch $(STAMP)

# Debian packages the project needs: OpenBLAS makes mlx's CPU matrix
# multiply ~30x faster. Installed with apt when missing and we may (root or
# passwordless sudo); otherwise a note says what to install.
system-deps:
	@sh tools/install_system_packages.sh

# nginx in front of gunicorn (video_analysis/serve/): nginx reads whole requests, so slow or stalled clients
# never hold one of gunicorn's threads (guides/operations.md).
run: setup
	exec env HOST=$(HOST) PORT=$(PORT) $(PY) -m video_analysis.serve

dev: setup
	$(PY) app.py

# A model worker of cluster mode (README "Several machines"): needs REDIS_URL and WORKER_TOKEN, as the API has them.
worker: setup
	$(PY) worker.py

test: setup
	$(PY) -m pytest

# Only the concurrency tests (tests/test_load.py); `make test` runs them too (~25 s).
test-load: setup
	$(PY) -m pytest -m load

# A 40 s video with white squares at 12-18 s and 31-36 s, analysed by the
# marker model (trained on first use, ~3 min, then cached): the highlights
# printed are 00:10-00:20 and 00:30-00:40 at 9/10.
demo: setup
	@mkdir -p $(DEMO_DIR)
	$(PY) -m tools.synthetic_video $(DEMO_DIR)/demo.mp4 --duration 40 --marker 12:18 --marker 31:36
	MODEL_DIR=$$($(PY) -m tools.make_tiny_model .cache/models --preset marker --cached) && \
	$(PY) video_highlight_generator.py $(DEMO_DIR)/demo.mp4 --model "$$MODEL_DIR" --json $(DEMO_DIR)/highlights.json

clean:
	rm -rf .cache .pytest_cache

# Benchmarks (bench/README.md): ratios measured side by side in one run.
# bench-setup installs ffmpeg, which only the reference pipeline uses, and bench/requirements.txt
# (PySceneDetect, which only the cut-detection figure uses).
.PHONY: bench-setup bench bench-quick
bench-setup: $(STAMP)
	@sh tools/install_system_packages.sh ffmpeg
	$(PY) -m pip install --quiet -r bench/requirements.txt

bench: setup bench-setup
	$(PY) -m bench.run

bench-quick: setup bench-setup
	$(PY) -m bench.run --quick
