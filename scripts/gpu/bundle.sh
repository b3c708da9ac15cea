#!/usr/bin/env bash
# The GPU bundle: the main build's binaries, stripped copies, plus the non-torch shared libraries
# they load, in gpu_bundle/ (git-ignored; carried to the GPU machine with `run`'s carry list).
# No second build: it copies what scripts/setup.sh built (same LibTorch as the GPU machine's, the
# torch==2.11.0 cu130 wheel). At most 40 MB.
#   scripts/gpu/bundle.sh [BUILD_DIR] [BUNDLE_DIR]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BUILD="$(cd "${1:-${AGENTTUNE_BUILD_DIR:-$ROOT/build}}" && pwd)"
BUNDLE="${2:-$ROOT/gpu_bundle}"
LIMIT_MB=40
BINARIES=(agenttune bench/bench_train_step bench/bench_document_isolation_check bench/bench_device_parity_dump)

for b in "${BINARIES[@]}"; do
  [[ -x "$BUILD/$b" ]] || { echo "bundle: $BUILD/$b is missing: build it first (scripts/setup.sh)" >&2; exit 2; }
done
rm -rf "$BUNDLE"
mkdir -p "$BUNDLE/bin" "$BUNDLE/lib"
for b in "${BINARIES[@]}"; do
  strip --strip-unneeded -o "$BUNDLE/bin/$(basename "$b")" "$BUILD/$b"
done

# Libraries the binaries load that neither torch's lib/ nor the C runtime provides travel along.
# The C runtime (glibc, libstdc++, libgcc_s) is the device image's own, which is newer.
is_runtime() {
  case "$(basename "$1")" in
    libc.so*|libm.so*|libpthread.so*|libdl.so*|librt.so*|libutil.so*|ld-linux*|libstdc++.so*|libgcc_s.so*) return 0 ;;
  esac
  return 1
}
for b in "$BUNDLE"/bin/*; do
  ldd "$b" | awk '/=> \// {print $3}' | while read -r lib; do
    [[ "$lib" == */torch/lib/* ]] && continue
    is_runtime "$lib" && continue
    cp -L -n "$lib" "$BUNDLE/lib/"
  done
done
strip --strip-unneeded "$BUNDLE"/lib/*.so* 2>/dev/null || true

size_mb=$(du -sm "$BUNDLE" | cut -f1)
{
  echo "{"
  echo "  \"commit\": \"$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)\","
  echo "  \"built_from\": \"$BUILD\","
  echo "  \"size_mb\": $size_mb,"
  echo "  \"binaries\": [$(ls "$BUNDLE/bin" | sed 's/.*/"&"/' | paste -sd, -)],"
  echo "  \"libraries\": [$(ls "$BUNDLE/lib" | sed 's/.*/"&"/' | paste -sd, -)]"
  echo "}"
} > "$BUNDLE/manifest.json"
echo "bundle: $BUNDLE, ${size_mb} MB ($(ls "$BUNDLE/bin" | wc -l) binaries, $(ls "$BUNDLE/lib" | wc -l) libraries)"
if (( size_mb > LIMIT_MB )); then
  echo "bundle: ${size_mb} MB is over the ${LIMIT_MB} MB limit" >&2
  exit 1
fi
