#!/usr/bin/env bash
# Runs every fuzz target of fuzz/ (cargo fuzz, libFuzzer) for a fixed time
# each, starting from the committed seeds, and fails on any crash.
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET ...]
# Installs cargo-fuzz when missing. The toolchain is the machine's stable
# one: RUSTC_BOOTSTRAP lets it take the flags libFuzzer's instrumentation
# needs; no sanitizer runtime is used (-s none), so a crash is a panic, an
# abort or a stack overflow. New inputs the fuzzer finds go to a scratch
# corpus, never into the tree; a crashing input is kept in
# fuzz/artifacts/TARGET/ for a regression seed.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-20}"
shift || true
targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
    targets=(xml_reader depth_guard websocket sasl jid archive_chunk mls_wire envelope hub_message)
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install --locked cargo-fuzz
fi
export RUSTC_BOOTSTRAP=1

cd fuzz
cargo fuzz build -s none -O
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
failed=()
for target in "${targets[@]}"; do
    mkdir -p "$scratch/$target" "seeds/$target"
    echo "== fuzz $target for ${seconds}s"
    set +e
    cargo fuzz run -s none -O "$target" "$scratch/$target" "seeds/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        2>&1 | grep -E '^(#[0-9]+ +DONE|stat::number_of_executed_units|==|thread|SUMMARY|Test unit|panicked)'
    status=${PIPESTATUS[0]}
    set -e
    if [[ $status -ne 0 ]]; then
        failed+=("$target")
    fi
done
if [[ ${#failed[@]} -ne 0 ]]; then
    echo "fuzz targets that crashed: ${failed[*]} (inputs in fuzz/artifacts/)"
    exit 1
fi
echo "fuzzing: ${#targets[@]} targets, ${seconds}s each, no crash"
