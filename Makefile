# `make run` and `make test` each build .venv from nothing when it is missing.
PY      ?= python3.11
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
OUT     ?= runs/default

.PHONY: run test install android-core-deps clean

# The main job, then on it the KT ablation's headline (the knowledge token against a 0-prior
# control, 5 seeds, intervals; ~2 min on 2 cores) and the landmarks on real photos against
# FaceMesh's (seconds): report.md carries all three.
run: $(STAMP)
	$(BIN)/ktedge run --out $(OUT)
	$(BIN)/python -m ktedge.benchmarks.kt_ablation --out $(OUT) --plan headline
	$(BIN)/python -m ktedge.benchmarks.real_faces --out $(OUT)

test: $(STAMP)
	-@$(MAKE) --no-print-directory android-core-deps
	$(BIN)/python -m pytest -n 2 --dist loadgroup

# The Android app's core module compiles and runs its tests on the desktop JVM with Debian's
# Kotlin, JUnit and Gson, and the app's runtime wrappers compile against stubs of the pinned
# LiteRT/ExecuTorch APIs (tests/test_android_core.py, tests/test_android_app_compiles.py; skipped
# outside CI when these are missing).
android-core-deps:
	@if command -v kotlinc >/dev/null && [ -f /usr/share/java/junit4.jar ] && [ -f /usr/share/java/gson.jar ]; then :; \
	else SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq --no-install-recommends \
	    kotlin junit4 libgoogle-gson-java default-jdk-headless >/dev/null; fi

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	# MediaPipe's face models (predict's detector, FaceMesh's weights, the bench's peer rows) from its
	# wheel, which needs numpy<2, the real MTCNN O-Net's weights from facenet-pytorch's wheel, which
	# pins an old torch, and two real photos from insightface's source archive: all three are
	# downloaded (not installed) and the files ktedge uses extracted with their sha256 checked, so
	# `pip check` holds for the venv.
	-$(BIN)/pip uninstall --quiet --yes facenet-pytorch 2>/dev/null  # a venv an older Makefile installed it in
	$(BIN)/pip download --quiet --no-deps --only-binary=:all: facenet-pytorch==2.6.0 -d $(VENV)/cache
	$(BIN)/pip download --quiet --no-deps --only-binary=:all: mediapipe==0.10.21 -d $(VENV)/cache
	$(BIN)/pip download --quiet --no-deps --no-binary=:all: insightface==2.1 -d $(VENV)/cache
	$(BIN)/python -m ktedge.assets $(VENV)/cache/mediapipe-0.10.21-*.whl $(VENV)/cache/facenet_pytorch-2.6.0-*.whl $(VENV)/cache/insightface-2.1.tar.gz
	touch $(STAMP)

clean:
	rm -rf $(VENV) runs
