#!/usr/bin/env bash
# Runs a command against a fresh local S3 server, and stops the server afterwards, also when
# the command fails or is interrupted. The command's exit status is this script's.
#
#   scripts/with-s3.sh cargo test -p shards --features s3 --test s3
set -euo pipefail

if [[ $# -eq 0 ]]; then
    echo "usage: $0 COMMAND [ARGS...]" >&2
    exit 2
fi
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
S3_SERVER_STATE="$(mktemp -d "${TMPDIR:-/tmp}/s3-server.XXXXXX")"
export S3_SERVER_STATE
cleanup() {
    "$here/s3-server.sh" stop || true
    rm -rf "$S3_SERVER_STATE"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
exports="$("$here/s3-server.sh" start)"
eval "$exports"
set +e
"$@"
status=$?
set -e
exit "$status"
