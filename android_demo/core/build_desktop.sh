#!/usr/bin/env bash
# Compile the app's core module (no Android imports) and its JUnit tests on the desktop JVM, then
# run the tests. Needs Debian's kotlin, junit4 and libgoogle-gson-java (`make android-core-deps`
# installs them); Gradle builds the same sources for the app. Usage: build_desktop.sh [OUT_DIR]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/build/desktop}
java_libs=/usr/share/java
for jar in gson.jar junit4.jar hamcrest-core.jar kotlin-stdlib.jar; do
    [ -f "$java_libs/$jar" ] || { echo "build_desktop.sh: $java_libs/$jar missing: run 'make android-core-deps'" >&2; exit 3; }
done
command -v kotlinc >/dev/null || { echo "build_desktop.sh: kotlinc missing: run 'make android-core-deps'" >&2; exit 3; }
mkdir -p "$out"
libs="$java_libs/gson.jar"
kotlinc -nowarn "$here/src/main/kotlin" -cp "$libs" -d "$out/core.jar" 2>&1 | grep -v "^OpenJDK.*deprecated" || true
[ -f "$out/core.jar" ] || { echo "build_desktop.sh: core did not compile" >&2; exit 1; }
kotlinc -nowarn "$here/src/test/kotlin" -cp "$out/core.jar:$libs:$java_libs/junit4.jar" -d "$out/core-tests.jar" 2>&1 \
    | grep -v "^OpenJDK.*deprecated" || true
[ -f "$out/core-tests.jar" ] || { echo "build_desktop.sh: tests did not compile" >&2; exit 1; }
tests=$(cd "$here/src/test/kotlin" && ls org/ktedge/demo/core/*Test.kt | sed 's/\.kt$//; s#/#.#g')
java -cp "$out/core.jar:$out/core-tests.jar:$libs:$java_libs/junit4.jar:$java_libs/hamcrest-core.jar:$java_libs/kotlin-stdlib.jar" \
    org.junit.runner.JUnitCore $tests
