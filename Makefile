# Two commands: `make book` builds the book, `make test` runs every test. Both set up .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Run size for notebooks (ci | cpu | gpu); ci keeps a full build and test within minutes on 2 CPU cores.
PRESET ?= ci
export VQVAE_PRESET := $(PRESET)

.PHONY: setup book test lint unit notebooks smoke refresh browser clean

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt -e .
	touch $@

# npm's packages too: chapter 10 and its tests read the emoji images (emoji-datasource-google) from node_modules,
# and they run before `make book`.
setup: $(VENV)/.installed node_modules/.package-lock.json

# Offline-complete book: MathJax, RequireJS and the ipywidgets HTML manager come from npm at the
# versions pinned in package-lock.json and are served from the built book (_static/vendor/), not a CDN.
VENDOR := book/_static/vendor

node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund --ignore-scripts

$(VENDOR)/.copied: node_modules/.package-lock.json
	rm -rf $(VENDOR)
	mkdir -p $(VENDOR)/mathjax $(VENDOR)/requirejs $(VENDOR)/html-manager
	cd node_modules/mathjax && cp -r LICENSE es5/tex-mml-chtml.js es5/input es5/output es5/ui es5/a11y \
	  es5/sre es5/adaptors $(CURDIR)/$(VENDOR)/mathjax/
	cp node_modules/requirejs/require.js $(VENDOR)/requirejs/
	cp node_modules/@jupyter-widgets/html-manager/dist/embed-amd.js \
	  node_modules/@jupyter-widgets/html-manager/dist/*.woff* $(VENDOR)/html-manager/
	touch $@

book: setup $(VENDOR)/.copied
	$(VENV)/bin/jupyter-book build . -W -n --keep-going
	@! grep -rlE '<script[^>]*src="(https?:)?//|<link[^>]*stylesheet[^>]*href="(https?:)?//' \
	  _build/html --include='*.html' \
	  || { echo "error: the pages above load scripts from the internet"; exit 1; }

# A real browser (Debian's chromium, driven by Playwright; no browser download) opens every page
# of the built book with every request that leaves 127.0.0.1 blocked. Screenshots: _build/screenshots/.
# Two pages at a time: most of a page's time is the browser waiting (measured 104 s against 147 s one by one).
browser: setup
	command -v chromium >/dev/null || $$([ "$$(id -u)" = 0 ] || echo sudo) \
	  sh -c 'apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium'
	$(PY) -m pytest -q -n 2 tests/browser

lint: setup
	$(VENV)/bin/ruff check .

# One worker per CPU core, one torch thread each (tests/conftest.py), tests handed out one by one. A
# module fixture (the five learning runs) may then be built on both workers; measured on 2 cores this
# still beats a file per worker (395-401 s against 448 s).
unit: setup
	$(PY) -m pytest -q -n auto --dist load tests --ignore=tests/browser --ignore=tests/smoke

# Two groups side by side, one thread each (one thread and two threads took 681 s on two cores, one and one
# 385 s): chapters 3-8 and 10, in book order, since 6-8 load chapter 5's model from runs/ (JupyterLab's test
# reuses it, its kernels also with one thread: the recipes record the thread count); beside them 1, 2, 9 and
# 11, in that order: chapter 11's plain-VQ rows are chapter 9's runs, loaded from runs/cache. (Chapters 1-3, 9
# and 11 beside 4-8 and 10 took 516 s and 365 s.)
notebooks: setup
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -p no:cacheprovider --nbval-lax notebooks/0[1-2]_*.ipynb notebooks/09_*.ipynb \
	  notebooks/1[1-9]_*.ipynb & rest=$$!; \
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -p no:cacheprovider --nbval-lax notebooks/0[3-8]_*.ipynb notebooks/10_*.ipynb; \
	status=$$?; wait $$rest && exit $$status

# The Colab path in miniature: every chapter with the gpu preset's sizes and a few steps (VQVAE_SMOKE=1), on
# two workers, a test class each (tests/smoke/test_gpu_smoke.py).
smoke: setup
	$(PY) -m pytest -q -n 2 --dist loadscope tests/smoke

# Re-execute every chapter in place under ci, so that the outputs a reader sees on GitHub or Colab are the
# current code's (tests/test_notebook_stamp.py fails until they are). `make refresh CHAPTERS="05 06"` for some.
refresh: setup
	$(PY) tools/stored_outputs.py refresh $(CHAPTERS)

test: lint unit notebooks smoke book browser

clean:
	rm -rf _build
