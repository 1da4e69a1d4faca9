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
# no artifact: one bitstream for every network that fits) and deploy the whole network to
# it over the serial link: check fit, stream, verify, run, check every logit exactly; then
# evaluate it there on the test split. Last, one simulated ULX3S processor takes digits-mlp
# and then digits-cnn with no rebuild (the iCEBreaker's block RAM has no room for the
# convolutions' gather yet: docs/processor.md).
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
	@echo "== one simulated iCEBreaker processor (its UART on a pseudo-terminal), no rebuild"
	$(DARBGEN) serve-sim --board icebreaker > build/serve-sim.json & \
	  sim=$$!; trap "kill $$sim 2>/dev/null" EXIT; \
	  until grep -q port build/serve-sim.json; do kill -0 $$sim; sleep 0.2; done; \
	  port=$$(sed -n 's/.*"port": "\(.*\)".*/\1/p' build/serve-sim.json); \
	  $(DARBGEN) deploy build/digits-mlp.darb --port $$port --timeout 10 \
	      --inputs build/digits-x.npy -o build/digits-board-logits.npy; \
	  $(DARBGEN) eval build/digits-mlp.darb --dataset digits --on $$port --timeout 10
	@echo "== one simulated ULX3S processor (4 lanes): digits-mlp, then digits-cnn, no rebuild"
	$(DARBGEN) prune digits-cnn --method darb --ratio 8 -o build/digits-cnn.darb
	$(DARBGEN) serve-sim --board ulx3s --lanes 4 > build/serve-sim-ulx3s.json & \
	  sim=$$!; trap "kill $$sim 2>/dev/null" EXIT; \
	  until grep -q port build/serve-sim-ulx3s.json; do kill -0 $$sim; sleep 0.2; done; \
	  port=$$(sed -n 's/.*"port": "\(.*\)".*/\1/p' build/serve-sim-ulx3s.json); \
	  for net in digits-mlp digits-cnn; do \
	    $(DARBGEN) deploy build/$$net.darb --port $$port --timeout 20 \
	        --inputs build/digits-x.npy -o build/$$net-ulx3s-logits.npy || exit 1; \
	  done

# pytest exits non-zero (5) when no test ran, so an empty run fails too.
test: install data
	$(PYTHON) -m pytest -m "not slow" $(PYTEST_ARGS)

clean:
	rm -rf build .pytest_cache .hypothesis
