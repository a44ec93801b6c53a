# ctmorph: every target creates/updates .venv/ itself, so each works as the first command on a
# fresh machine with only Python 3.11 and pip.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TSTAMP := $(VENV)/.installed-test
BSTAMP := $(VENV)/.installed-bench
SAMPLES := sample_scans
OUT    ?= results/demo

.PHONY: demo test lint bench bench-study samples clean venv analyze report validation browser realistic

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(TSTAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP) $@

venv: $(STAMP)

samples: $(STAMP)
	$(BIN)/ctmorph samples $(SAMPLES)

demo: $(STAMP)
	$(BIN)/ctmorph samples $(SAMPLES) --if-missing
	$(BIN)/ctmorph calibrate $(SAMPLES)/phantoms/HA025 $(SAMPLES)/phantoms/HA075 --densities 0.25,0.75 -o $(OUT)/calibration.json
	$(BIN)/ctmorph analyze $(SAMPLES) --groups $(SAMPLES)/groups.csv --calibration $(OUT)/calibration.json -o $(OUT)
	$(BIN)/ctmorph report $(OUT) --control sham --model OVX
	@echo ""
	@echo "Per-animal morphometry: $(OUT)/morphometry.csv"
	@echo "Group summary:          $(OUT)/report/group_summary.csv"

# Batch runs: make analyze SCANS=/data/study GROUPS=/data/study/groups.csv OUT=results/study
#         or: make analyze MANIFEST=study.csv OUT=results/study [ARGS=--dry-run]
analyze: $(STAMP)
	@test -n "$(SCANS)$(MANIFEST)" || { echo "usage: make analyze SCANS=dir [GROUPS=file] | MANIFEST=file, OUT=dir [ARGS='--jobs 2']"; exit 2; }
	$(BIN)/ctmorph analyze $(SCANS) $(if $(GROUPS),--groups $(GROUPS),) $(if $(MANIFEST),--manifest $(MANIFEST),) -o $(OUT) $(ARGS)

report: $(STAMP)
	$(BIN)/ctmorph report $(OUT) $(ARGS)

$(BSTAMP): benchmarks/requirements.txt | $(STAMP)
	$(BIN)/python -m pip install --quiet -r benchmarks/requirements.txt
	touch $@

# Peer comparison of Tb.Th + Tb.Sp (about 15 min on 2 cores); writes docs/performance.md.
# BENCH_ARGS='--sizes 48 64' for a quick smoke run.
bench: $(STAMP) $(BSTAMP)
	$(BIN)/python benchmarks/bench_peers.py --write docs/performance.md $(BENCH_ARGS)

# Where a femur's time goes: stages and measures against the floor of the same run, and the
# sample study (about 10 min on 2 cores); writes docs/performance.md.
bench-study: $(STAMP) $(BSTAMP)
	$(BIN)/ctmorph samples $(SAMPLES) --if-missing
	$(BIN)/python benchmarks/bench_study.py --study --write docs/performance.md

# Regenerate docs/validation.md (every metric on analytic phantoms, about 10 s)
validation: $(STAMP)
	$(BIN)/python scripts/make_validation.py --write docs/validation.md

# The hard realistic study (13 femurs with truth.json, about 1.5 min) and the automatic VOI
# judged against its truth (about 4 min): the table of docs/realistic.md
REALISTIC ?= results/realistic_study
realistic: $(STAMP)
	$(BIN)/ctmorph samples $(REALISTIC) --realistic --if-missing
	$(BIN)/python scripts/evaluate_realistic.py $(REALISTIC) results/realistic --write results/realistic/evaluation.md

lint: $(TSTAMP)
	$(BIN)/ruff check ctmorph tests benchmarks scripts

# The browser test of the review page (tests/test_review.py) drives Debian's Chromium through
# its ChromeDriver. As root with apt-get, they are installed when missing (about 20 s); where
# that cannot be done the test skips, saying why, and the rest of the suite runs.
browser: | $(BIN)/python
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then :; \
	elif [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then \
	  echo "chromium/chromedriver missing and no apt-get as root: the browser test will skip"; \
	else \
	  echo "installing Debian's chromium and chromium-driver for the browser test"; \
	  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	         --no-install-recommends -o DPkg::Lock::Timeout=120 chromium chromium-driver; \
	       } >$(VENV)/apt-browser.log 2>&1; then \
	    tail -n 5 $(VENV)/apt-browser.log; \
	    echo "WARNING: chromium not installed (see $(VENV)/apt-browser.log): the browser test will skip"; \
	  fi; \
	fi

test: $(TSTAMP) browser
	$(BIN)/ruff check ctmorph tests benchmarks scripts
	$(BIN)/python -m pytest -q tests

clean:
	rm -rf $(VENV) results .pytest_cache
