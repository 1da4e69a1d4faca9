# The whole set-up is `make demo` or `make test`: each creates .venv when it is missing
# and installs the project with all its extras from PyPI, then does its job.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

VENV ?= .venv
PYTHON := $(VENV)/bin/python
DARBGEN := $(VENV)/bin/darbgen
STAMP := $(VENV)/.installed-stamp
# Local package mirrors may print one harmless warning per missing package; hide those.
PIP_NOISE := is ignored: it is neither a file nor a directory

.PHONY: install data demo test clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet -e '.[all]' 2>&1 | { grep -v "$(PIP_NOISE)" || true; }
	touch $@

# The Debian data sets the fashion-* examples and their tests read (Fashion-MNIST):
# installed as root where apt-get exists, else a message saying what to install.
data:
	.ci/setup-data

# Prune the digits MLP with DARB, show the artifact, then run its first layer on the
# generated engine in Verilator over 64 digits test images, checked against the golden model;
# run the whole network (a chain of engines with requantizers) on the full test split and
# print dense, integer and hardware accuracy; then serve a simulated iCEBreaker running its
# layer-sequenced processor (UART + protocol controller + processor in Verilator, built with
# no artifact: one bitstream for every network that fits; its banks are the UP5K's SPRAM on
# Yosys's model) and deploy the whole network to it over the serial link: check fit, stream,
# verify, run, check every logit exactly; then evaluate it there on the test split. Last,
# the same simulated iCEBreaker, with no rebuild, takes digits-cnn (its convolutions run on
# the same lanes, their feature maps and gather tables in the SPRAM banks), every logit exact.
demo: install data
	mkdir -p build
	$(DARBGEN) prune digits-mlp --method darb --ratio 16 -o build/digits-mlp.darb
	$(DARBGEN) inspect build/digits-mlp.darb
	$(DARBGEN) generate build/digits-mlp.darb --lanes 8 -o build/engine
	$(PYTHON) -m darbgen.pruning.examples digits-inputs build/digits-x.npy 64
	$(DARBGEN) simulate build/digits-mlp.darb --layer fc1 --lanes 8 \
	    --inputs build/digits-x.npy -o build/digits-fc1-y.npy
	@echo "== the whole network (3 engines + requantizers) in Verilator on the test split"
	$(DARBGEN) eval build/digits-mlp.darb --dataset digits --on verilator
	$(DARBGEN) prune digits-cnn --method darb --ratio 8 -o build/digits-cnn.darb
	@echo "== one simulated iCEBreaker processor (its UART on a pseudo-terminal): digits-mlp, then digits-cnn, no rebuild"
	$(DARBGEN) serve-sim --board icebreaker > build/serve-sim.json & \
	  sim=$$!; trap "kill $$sim 2>/dev/null" EXIT; \
	  until grep -q port build/serve-sim.json; do kill -0 $$sim; sleep 0.2; done; \
	  port=$$(sed -n 's/.*"port": "\(.*\)".*/\1/p' build/serve-sim.json); \
	  $(DARBGEN) deploy build/digits-mlp.darb --port $$port --timeout 10 \
	      --inputs build/digits-x.npy -o build/digits-board-logits.npy; \
	  $(DARBGEN) eval build/digits-mlp.darb --dataset digits --on $$port --timeout 10; \
	  $(DARBGEN) deploy build/digits-cnn.darb --port $$port --timeout 20 \
	      --inputs build/digits-x.npy -o build/digits-cnn-board-logits.npy

# pytest exits non-zero (5) when no test ran, so an empty run fails too.
test: install data
	$(PYTHON) -m pytest -m "not slow" $(PYTEST_ARGS)

clean:
	rm -rf build .pytest_cache .hypothesis
