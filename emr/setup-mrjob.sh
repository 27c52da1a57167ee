#!/usr/bin/env bash
# Installs mrjob into .venv-mrjob at the repository root (git-ignored), for the local run of the
# streaming step under mrjob's local runner (emr/local-run.sh mrjob, and its test).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/.venv-mrjob"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c 'import mrjob' 2>/dev/null; then
    "$venv/bin/pip" install --quiet --disable-pip-version-check 'mrjob==0.7.4'
fi
"$venv/bin/python" -c 'import mrjob; print("mrjob", mrjob.__version__, "in", "'"$venv"'")'
