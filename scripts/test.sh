#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what the tests need, then runs them.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== libtorch for the trainer (PyPI torch 2.11.0 into .venv)"
bash scripts/setup-torch.sh

echo "== headless Chromium for the report tests (Debian's package)"
if ! command -v chromium >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
            || echo "test.sh: could not install chromium; the browser tests skip (and fail under CI=true)"
    else
        echo "test.sh: chromium missing and not root; the browser tests skip (and fail under CI=true)"
    fi
fi

echo "== tests (debug build), with a local S3 server for the S3 tests"
bash scripts/with-s3.sh cargo test --workspace --no-fail-fast

echo "== the streaming step under mrjob's local runner"
bash emr/setup-mrjob.sh
cargo test -p fastdp-tests --test mrjob -- --ignored

echo "== portable EMR binaries (glibc 2.17)"
bash emr/build.sh
