#!/usr/bin/env bash
# A local S3-compatible server (moto) for the S3 tests, on a free loopback port.
#
#   eval "$(scripts/s3-server.sh start)"   # installs moto on first use, starts it, prints exports
#   scripts/s3-server.sh stop              # stops the server this state directory started
#
# The exports point the AWS SDK at it: AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID,
# AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_EC2_METADATA_DISABLED (never probe instance metadata),
# and MOTO_SERVER (the binary, for tests that start a private server of their own).
# State (pid, port, log) lives in $S3_SERVER_STATE (default target/s3-server).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv-moto"
moto_version="5.2.5"
state="${S3_SERVER_STATE:-$root/target/s3-server}"

log() { echo "s3-server: $*" >&2; }

install() {
    local stamp="$venv/.moto-$moto_version"
    if [[ -x "$venv/bin/moto_server" && -e "$stamp" ]]; then
        return
    fi
    log "installing moto[server]==$moto_version into $venv (about 35 s)"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        "moto[server]==$moto_version" >&2
    touch "$stamp"
}

free_port() {
    "$venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start() {
    install
    mkdir -p "$state"
    if [[ -e "$state/pid" ]] && kill -0 "$(cat "$state/pid")" 2>/dev/null; then
        log "already running (pid $(cat "$state/pid")); stop it first"
        exit 1
    fi
    local port="${1:-$(free_port)}"
    "$venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$state/moto.log" 2>&1 &
    local pid=$!
    echo "$pid" >"$state/pid"
    echo "$port" >"$state/port"
    local url="http://127.0.0.1:$port"
    for _ in $(seq 1 100); do
        if curl -fsS -o /dev/null "$url/" 2>/dev/null; then
            log "moto $moto_version listening on $url (pid $pid)"
            cat <<VARS
export AWS_ENDPOINT_URL=$url
export AWS_ACCESS_KEY_ID=AKIASHARDSTESTKEY000
export AWS_SECRET_ACCESS_KEY=shards-test-secret-never-printed
export AWS_REGION=us-east-1
export AWS_EC2_METADATA_DISABLED=true
export MOTO_SERVER=$venv/bin/moto_server
VARS
            return
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            log "moto exited during start; its log:"
            cat "$state/moto.log" >&2
            rm -f "$state/pid"
            exit 1
        fi
        sleep 0.2
    done
    log "moto did not answer on $url within 20 s"
    stop
    exit 1
}

stop() {
    [[ -e "$state/pid" ]] || return 0
    local pid
    pid="$(cat "$state/pid")"
    if kill "$pid" 2>/dev/null; then
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
        log "stopped (pid $pid)"
    fi
    rm -f "$state/pid" "$state/port"
}

case "${1:-}" in
    install) install ;;
    start) shift; start "$@" ;;
    stop) stop ;;
    *)
        echo "usage: $0 install | start [PORT] | stop" >&2
        exit 2
        ;;
esac
