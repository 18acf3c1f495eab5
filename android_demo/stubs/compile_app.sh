#!/usr/bin/env bash
# Compile the app's runtime wrappers -- the app sources that touch LiteRT or ExecuTorch, with the
# core module they use -- on the desktop JVM against signature stubs of the pinned LiteRT and
# ExecuTorch APIs (stubs/src, written by stubs/generate.py from the libraries' sources), so a call
# the pinned API lacks fails here, as it would at :app:compileDebugKotlin. Needs Debian's kotlin and
# libgoogle-gson-java (`make android-core-deps`).
# Usage: compile_app.sh [OUT_DIR]  -> OUT_DIR/runtime-stubs.jar, OUT_DIR/app-wrappers.jar
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
demo=$(dirname "$here")
out=${1:-$demo/build/app-desktop}
# The activities (Android UI, CameraX, AppCompat) are not compiled here: no Android SDK.
app_sources=(FaceModel.kt LiteRtFaceModel.kt ExecuTorchFaceModel.kt)
gson=/usr/share/java/gson.jar
[ -f "$gson" ] || { echo "compile_app.sh: $gson missing: run 'make android-core-deps'" >&2; exit 3; }
command -v kotlinc >/dev/null || { echo "compile_app.sh: kotlinc missing: run 'make android-core-deps'" >&2; exit 3; }
mkdir -p "$out"

compile() {  # kotlinc without its JDK deprecation banner; fails as kotlinc fails
    local log status
    log=$(kotlinc -nowarn "$@" 2>&1) && status=0 || status=$?
    grep -v "^OpenJDK.*deprecated" <<<"$log" || true
    return "$status"
}

# Its own module, so `internal` library members stay out of the app's reach, as in the real AARs.
mapfile -t stubs < <(find "$here/src" -name '*.kt' | sort)
compile "${stubs[@]}" -module-name runtime-stubs -d "$out/runtime-stubs.jar" \
    || { echo "compile_app.sh: the stubs did not compile" >&2; exit 1; }
compile "$demo/core/src/main/kotlin" "${app_sources[@]/#/$demo/app/src/main/kotlin/org/ktedge/demo/}" \
    -cp "$out/runtime-stubs.jar:$gson" -module-name app -d "$out/app-wrappers.jar" \
    || { echo "compile_app.sh: the app's runtime wrappers did not compile against the pinned APIs" >&2; exit 1; }
