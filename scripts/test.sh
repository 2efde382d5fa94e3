#!/usr/bin/env bash
# Runs Tern's whole test suite on a fresh Debian machine with Rust installed,
# installing first whatever the tests need:
#   - Debian packages (through apt-get, only those missing),
#   - a Python venv in .venv with the PyPI packages the client tests use.
# Then: formatting and lint gates, and every test of the workspace.
# Safe to run again: installed pieces are reused.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n== %s\n' "$*"; }

# Debian packages the tests run, installed when missing: dnsmasq answers
# the SRV records of the test domains; Prosody (with lua-unbound, to ask
# that dnsmasq) and ejabberd are federation peers. The tests start each
# peer in the foreground with a configuration of their own, on loopback;
# nothing is started or changed system-wide. profanity, driven under tmux,
# is a standard client of tern-bridge. libssl-dev (with pkg-config) is for
# building SQLCipher, which encrypts tern-bridge's store at rest.
# Chromium runs Converse.js, a browser client over WebSocket; Node.js and
# npm run it and @xmpp/client.
DEBIAN_PACKAGES=(dnsmasq-base prosody lua-unbound ejabberd profanity tmux libssl-dev pkg-config chromium)

# shellcheck source=scripts/apt.sh
source scripts/apt.sh
ensure_packages "${DEBIAN_PACKAGES[@]}"

say "Python venv with slixmpp (.venv)"
if ! .venv/bin/python -c 'import slixmpp' >/dev/null 2>&1; then
    rm -rf .venv
    if ! python3 -m venv .venv; then
        # Debian's own python3 needs python3-venv for ensurepip.
        rm -rf .venv
        apt_install python3 python3-venv
        python3 -m venv .venv
    fi
    .venv/bin/pip install --quiet --disable-pip-version-check -r server/tests/slixmpp/requirements.txt
fi
.venv/bin/python -c 'import slixmpp; print("slixmpp", slixmpp.__version__)'

say "Node.js packages of the web client tests (server/tests/web)"
if ! command -v npm >/dev/null 2>&1; then
    apt_install nodejs npm
fi
if [[ ! -d server/tests/web/node_modules/@xmpp/client ]] ||
    [[ server/tests/web/package-lock.json -nt server/tests/web/node_modules/.package-lock.json ]]; then
    (cd server/tests/web && npm ci --no-audit --no-fund --loglevel=error)
fi

# A one-shot build (CI's clean clone) gains nothing from incremental caches,
# which would take gigabytes of disk.
if [[ "${CI:-}" == true ]]; then
    export CARGO_INCREMENTAL=0
fi

say "cargo fmt --check"
cargo fmt --all -- --check

say "cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --quiet -- -D warnings

say "cargo test"
export TERN_REQUIRE_PEERS=1
export TERN_TEST_PYTHON="$PWD/.venv/bin/python"
cargo test --workspace --no-fail-fast

say "fuzz targets, ${TERN_FUZZ_SECONDS:-15} s each"
./scripts/fuzz.sh "${TERN_FUZZ_SECONDS:-15}"
