#!/usr/bin/env bash
# Bounded fuzz run of every target in fuzz/ (router, convert, keys): installs cargo-fuzz
# when missing, builds all targets once, then runs each for SECONDS (default 20) with its
# seeds and dictionary. Exits non-zero if any target crashes, panics, hangs or runs out
# of memory; the reproducer is left in fuzz/artifacts/<target>/ and can be replayed with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run <target> fuzz/artifacts/<target>/<file>
#
# Usage: scripts/fuzz.sh [SECONDS]
# Environment:
#   FUZZ_SANITIZER   address (default, cargo-fuzz's own default) or none (about 3x more
#                    executions per second; needs no unstable flag at all)
#   CARGO_TARGET_DIR when set, fuzz builds go to $CARGO_TARGET_DIR/fuzz (else fuzz/target)
#
# Only one stable toolchain is available. cargo-fuzz passes `-Zsanitizer=address` to
# rustc, which stable accepts only with RUSTC_BOOTSTRAP=1; that is the one unstable
# switch used, and only in this script.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-20}"
if ! [[ "$seconds" =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: scripts/fuzz.sh [SECONDS per target, a positive integer]" >&2
    exit 2
fi
sanitizer="${FUZZ_SANITIZER:-address}"
target_dir="${CARGO_TARGET_DIR:+$CARGO_TARGET_DIR/fuzz}"
target_dir="${target_dir:-fuzz/target}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz (about a minute)"
    cargo install cargo-fuzz --locked
fi

export RUSTC_BOOTSTRAP=1
# Build and run must use the same flags, or `cargo fuzz run` rebuilds everything.
flags=(--sanitizer "$sanitizer" --target-dir "$target_dir")

echo "== building fuzz targets (sanitizer: $sanitizer)"
start=$SECONDS
cargo fuzz build "${flags[@]}"
echo "== built in $((SECONDS - start)) s"

failed=()
for target in $(cargo fuzz list); do
    corpus="fuzz/corpus/$target"
    mkdir -p "$corpus"
    dirs=("$corpus")
    [[ -d "fuzz/seeds/$target" ]] && dirs+=("fuzz/seeds/$target")
    # -timeout: one input taking longer is a hang, reported as a failure.
    options=(-max_total_time="$seconds" -timeout=10 -print_final_stats=1)
    [[ -f "fuzz/dicts/$target.dict" ]] && options+=(-dict="fuzz/dicts/$target.dict")
    echo "== fuzzing $target for $seconds s"
    start=$SECONDS
    if cargo fuzz run "${flags[@]}" "$target" "${dirs[@]}" -- "${options[@]}"; then
        echo "== $target: no crash in $((SECONDS - start)) s"
    else
        echo "== $target: FAILED (reproducer in fuzz/artifacts/$target/)" >&2
        failed+=("$target")
    fi
done

if ((${#failed[@]})); then
    echo "fuzzing found failures in: ${failed[*]}" >&2
    exit 1
fi
echo "fuzzing: all targets ran ${seconds} s without a crash"
