# The README's two commands: `make demo` and `make test`. Both set everything up.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OUT ?= out/demo
export MUJOCO_GL := egl
export PYOPENGL_PLATFORM := egl
export RERUN_ANALYTICS := 0

.PHONY: demo test test-slow bench lint install system-deps clean

# Headless rendering needs EGL and Mesa's software renderer (osmesa does not work).
system-deps:
	@if ! ldconfig -p | grep -q 'libEGL.so.1' || ! ls /usr/lib/*/dri/swrast_dri.so >/dev/null 2>&1; then \
		echo "installing libegl1 libgl1-mesa-dri (headless MuJoCo rendering)"; \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq libegl1 libgl1-mesa-dri; \
		else sudo apt-get update -qq && sudo apt-get install -y -qq libegl1 libgl1-mesa-dri; fi; \
	fi

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch==2.13.0 is pinned first so pip takes the CPU wheel, not a multi-GB CUDA build.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev,omniverse,rl,text]'
	touch $(STAMP)

install: system-deps $(STAMP)

# The main job: record, inspect, then evaluate graded policies in the shipped world model
# against the simulator and report how well the rankings agree.
demo: install
	$(BIN)/cosmos-sim record --task reach --episodes 4 --skill 0.8 --cameras front,top,side --seed 0 --out $(OUT)/reach.zarr --overwrite
	$(BIN)/cosmos-sim info $(OUT)/reach.zarr
	$(BIN)/cosmos-sim view $(OUT)/reach.zarr --episode 0 --out $(OUT)/reach-episode0.rrd
	$(BIN)/cosmos-sim evaluate --task reach --model wm-diffusion-reach --policies expert@1.0,expert@0.75,expert@0.5,expert@0.25,random --episodes 12 --out $(OUT)/evaluation
	@echo "demo outputs are in $(OUT)/: the store, reach-episode0.rrd, and evaluation/ (report.md, scatter.png, rollouts.rrd)"
	@echo "open a recording with: $(BIN)/rerun $(OUT)/evaluation/rollouts.rrd"

# pytest exits 5 when it collects no tests: that is not a failure.
test: install
	$(BIN)/python -m pytest -q; rc=$$?; if [ $$rc -eq 5 ]; then exit 0; else exit $$rc; fi

test-slow: install
	$(BIN)/python -m pytest -q -m slow

bench: install
	$(BIN)/python -m benchmarks

lint: install
	$(BIN)/ruff check cosmos_sim tests benchmarks examples
	$(BIN)/ruff format --check cosmos_sim tests benchmarks examples

clean:
	rm -rf $(VENV) out build dist
