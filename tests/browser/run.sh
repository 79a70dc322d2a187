#!/bin/sh
# Runs the conference page's end-to-end tests with a real headless Chromium.
# Installs what they need when missing: Debian's chromium (apt-get) and playwright-core
# (npm ci, pinned in package-lock.json). Builds target/debug/lienthong first (the page is
# compiled into it) unless LIENTHONG_BIN names another binary, and target/debug/lienthong-load
# (meeting12.test.mjs's simulated sites) unless LIENTHONG_LOAD_BIN does.
set -eu
cd "$(dirname "$0")"
if ! command -v chromium >/dev/null 2>&1 && [ -z "${CHROMIUM:-}" ]; then
    echo "installing chromium (apt-get)" >&2
    if [ "$(id -u)" -eq 0 ]; then apt-get install -y chromium; else sudo apt-get install -y chromium; fi
fi
if [ ! -d node_modules/playwright-core ]; then
    npm ci --no-audit --no-fund
fi
if [ -z "${LIENTHONG_BIN:-}" ]; then
    (cd ../.. && cargo build --bin lienthong)
fi
if [ -z "${LIENTHONG_LOAD_BIN:-}" ]; then
    (cd ../.. && cargo build -p lienthong-load)
fi
# thin-link.test.mjs and restricted.test.mjs need root (network namespaces, nftables); they
# skip themselves otherwise.
exec node --test --test-concurrency=1 --test-timeout=180000 conference.test.mjs meeting12.test.mjs thin-link.test.mjs restricted.test.mjs
