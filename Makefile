# `make run` and `make test` each build .venv from nothing when it is missing.
PY      ?= python3.11
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
OUT     ?= runs/default

.PHONY: run test install clean

run: $(STAMP)
	$(BIN)/ktedge run --out $(OUT)

test: $(STAMP)
	$(BIN)/python -m pytest

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	# The real MTCNN O-Net weights ship inside this wheel; its own metadata pins an old torch,
	# so it is installed without dependencies and never imported (see model/onet.py).
	$(BIN)/pip install --quiet --no-deps facenet-pytorch==2.6.0
	touch $(STAMP)

clean:
	rm -rf $(VENV) runs
