#!/usr/bin/env bash
# The GPU bundle: the main build's binaries, stripped copies, plus the non-torch shared libraries
# they load, in gpu_bundle/ (git-ignored; carried to the GPU machine with `run`'s carry list).
# No second build: it copies what scripts/setup.sh built (same LibTorch as the GPU machine's, the
# torch==2.11.0 cu130 wheel), the .debs a build there would need, and the fake device for the
# rehearsal. At most 40 MB.
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

# The rehearsal counts host syncs on the fake accelerator (the tests' PrivateUse1 device), which
# reports them through CUDA's sync debug switch as a GPU does; a GPU run does not load it.
if [[ -f "$BUILD/tests/libagenttune_fake_device.so" ]]; then
  mkdir -p "$BUNDLE/rehearsal"
  strip --strip-unneeded -o "$BUNDLE/rehearsal/libagenttune_fake_device.so" "$BUILD/tests/libagenttune_fake_device.so"
fi

# The Llama-2 tokenizer the suite's tiny runs use: ../shared beside the checkout does not travel to
# the GPU machine, the carried bundle does (it is git-ignored, never committed).
TOKENIZER="${SUITE_TOKENIZER:-$ROOT/../shared/fixtures/llama2-tokenizer.model}"
[[ -f "$TOKENIZER" ]] || { echo "bundle: no tokenizer at $TOKENIZER (set SUITE_TOKENIZER)" >&2; exit 2; }
mkdir -p "$BUNDLE/fixtures"
cp "$TOKENIZER" "$BUNDLE/fixtures/llama2-tokenizer.model"

# The fallback when the bundle cannot load on the GPU machine (suite.sh builds there from the
# checkout): the Debian packages our CMake finds, as .debs, unpacked there into a private prefix.
# The device image has a compiler, CMake, ninja and nvcc but no apt. ~4 MB.
DEBS=(libsentencepiece-dev libsentencepiece0 libprotobuf-lite32 libyaml-cpp-dev libyaml-cpp0.7 libspdlog-dev
      libspdlog1.10 libfmt-dev libfmt9 libcli11-dev nlohmann-json3-dev libsimdjson-dev libsimdjson14 libzstd-dev
      libzstd1 zlib1g-dev zlib1g pkgconf-bin libpkgconf3 libpcre2-dev libpcre2-8-0 libpcre2-16-0 libpcre2-32-0
      libpcre2-posix3 libutf8proc-dev libutf8proc2)
mkdir -p "$BUNDLE/debs"
if [[ "${AGENTTUNE_BUNDLE_DEBS:-1}" == 0 ]]; then
  rm -rf "$BUNDLE/debs"  # the fallback's own bundle, made where there is no apt
elif ! (cd "$BUNDLE/debs" && apt-get download "${DEBS[@]}" > "$BUNDLE/debs.log" 2>&1); then
  # Without them the bundle still runs; only the fallback build is lost, and the suite says so.
  echo "bundle: apt-get download failed (see $BUNDLE/debs.log): no fallback build on the GPU machine" >&2
  rm -rf "$BUNDLE/debs"
fi

size_mb=$(du -sm "$BUNDLE" | cut -f1)
{
  echo "{"
  echo "  \"commit\": \"$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)\","
  echo "  \"built_from\": \"$BUILD\","
  echo "  \"build_type\": \"$(sed -n 's/^CMAKE_BUILD_TYPE:STRING=//p' "$BUILD/CMakeCache.txt")\","
  echo "  \"size_mb\": $size_mb,"
  echo "  \"binaries\": [$(ls "$BUNDLE/bin" | sed 's/.*/"&"/' | paste -sd, -)],"
  echo "  \"libraries\": [$(ls "$BUNDLE/lib" | sed 's/.*/"&"/' | paste -sd, -)],"
  echo "  \"debs\": [$(ls "$BUNDLE/debs" 2>/dev/null | sed 's/.*/"&"/' | paste -sd, -)]"
  echo "}"
} > "$BUNDLE/manifest.json"
echo "bundle: $BUNDLE, ${size_mb} MB ($(ls "$BUNDLE/bin" | wc -l) binaries, $(ls "$BUNDLE/lib" | wc -l) libraries)"
if (( size_mb > LIMIT_MB )); then
  echo "bundle: ${size_mb} MB is over the ${LIMIT_MB} MB limit" >&2
  exit 1
fi
