#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, unit tests and the end-to-end
# tests (which start the real sluice binary and real Python 3.13 workers on 127.0.0.1).
# Needs only the Rust toolchain and a Python >= 3.13 that Sluice can find (PATH or
# pyenv); Sluice installs the worker's and the example app's packages itself.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests use: a real Prometheus server (and promtool) for the
# observability tests. Installed once; needs root (or sudo).
if ! command -v prometheus >/dev/null 2>&1; then
    sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq prometheus >/dev/null
fi
export SLUICE_REQUIRE_PROMETHEUS=1
# A failing test's own message must stay in the last lines of the log: anyhow would append a
# backtrace to every returned error when RUST_BACKTRACE is set (panics keep theirs).
export RUST_LIB_BACKTRACE="${RUST_LIB_BACKTRACE:-0}"
# A clean clone gains nothing from incremental builds; their caches double the target
# directory (13 GB of a 28 GB debug tree here), and a full disk makes the linker fail.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

# Each phase's start, with the seconds since the script began: where CI time goes.
step() { echo "== test.sh: $1 (at ${SECONDS} s)" >&2; }

step "formatting and Python lint"
cargo fmt --all -- --check
# Python lint (ruff.toml) for the worker, the load kit, the scripts and the apps, with a pinned
# ruff in a tools venv under the target directory (created once).
tools="${CARGO_TARGET_DIR:-target}/tools-venv"
[ -x "$tools/bin/ruff" ] || { python3 -m venv "$tools" && "$tools/bin/pip" install -q --disable-pip-version-check ruff==0.17.6; }
"$tools/bin/ruff" check .
step "clippy"
cargo clippy --all-targets -- -D warnings
step "unit and integration tests"
cargo test --all-targets -- --nocapture
step "the native transport crate"
# The worker's native transport crate (a Python extension): lints and unit tests, which
# link libpython, so PyO3 is pointed at a Python 3.13 that runs (pyenv's, then PATH's).
py313=""
for candidate in $(ls -d "$HOME"/.pyenv/versions/3.13.*/bin/python3.13 2>/dev/null | sort -V -r) \
    "$(command -v python3.13 || true)"; do
    if [ -n "$candidate" ] && "$candidate" -c "" 2>/dev/null; then py313="$candidate"; break; fi
done
native_target="${CARGO_TARGET_DIR:-target}/native-tests"
PYO3_PYTHON="$py313" cargo clippy -p sluice-native --all-targets --target-dir "$native_target" -- -D warnings
PYO3_PYTHON="$py313" cargo test -p sluice-native --target-dir "$native_target"
step "the worker's Python unit tests"
# The worker's Python unit tests (worker/tests, pytest) against the worker environment that
# `sluice check` names: the pinned packages and the FunctionRpc descriptor the worker runs with.
pytest_site="${CARGO_TARGET_DIR:-target}/pytest-site"
[ -d "$pytest_site/pytest" ] || "$py313" -m pip install -q --disable-pip-version-check \
    --target "$pytest_site" pytest==9.2.0
report="$("${CARGO_TARGET_DIR:-target}/debug/sluice" check examples/hello)"
worker_dir="$(sed -n 's/^Worker  *//p' <<<"$report")"
worker_site="$(sed -n 's/^  packages  *//p' <<<"$report")"
[ -n "$worker_dir" ] && [ -n "$worker_site" ] || { echo "sluice check named no worker environment" >&2; exit 1; }
PYTHONPATH="$worker_dir:$worker_site:$pytest_site" "$py313" -m pytest -q -p no:cacheprovider worker/tests
step "integration tests on io_uring"
# The integration tests again with the HTTP front end on io_uring: every HTTP behaviour
# must hold on both I/O backends (the harness passes --io from SLUICE_TEST_IO).
SLUICE_TEST_IO=uring cargo test --test '*' -- --nocapture
step "fuzz"
# Fuzz targets (router, conversion, keys) must build and survive a short bounded run.
scripts/fuzz.sh "${SLUICE_FUZZ_SECONDS:-15}"
step "deploy files"
# Dockerfile lint and Kubernetes manifests against the Kubernetes schemas (offline after the first run).
scripts/check-deploy.sh
step "load kit smoke"
# The side-by-side load runner in smoke mode (seconds per configuration), so it cannot rot.
loadtest/run.sh --smoke
step "done"
