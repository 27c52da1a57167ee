#!/usr/bin/env bash
# A local S3-compatible server for the S3 tests (moto) or the benchmark (s3s-fs), on a free
# loopback port, listening on 127.0.0.1 only.
#
#   eval "$(scripts/s3-server.sh start)"   # installs the server on first use, starts it, prints exports
#   scripts/s3-server.sh stop              # stops the server this state directory started
#
# S3_SERVER_KIND picks the server:
#   moto (default): moto[server], Python; what the tests run against (it has the fault knobs
#         they use). Installed into .venv-moto.
#   s3s:  s3s-fs, a Rust S3 server over a local directory (the s3s project), for
#         bench/s3/run.sh: moto cannot take a run's output fast enough to measure the client.
#         Installed with `cargo install --locked` into $S3S_FS_ROOT (default .tools/s3s-fs;
#         needs rustc >= 1.92, about 3 minutes on 2 cores); its objects live under
#         $S3_SERVER_STATE/s3s-data, deleted by `stop`. It runs with scripts/s3-nodelay.c
#         preloaded (built into $S3S_FS_ROOT with cc), which turns Nagle's algorithm off on
#         its connections, as production S3 servers do; without it each GET could stall
#         about 40 ms on the client's delayed ACK.
#
# The exports point the AWS SDK at it: AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID,
# AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_EC2_METADATA_DISABLED (never probe instance metadata),
# S3_SERVER_KIND, and for moto MOTO_SERVER (the binary, for tests that start a private server
# of their own). State (pid, port, log) lives in $S3_SERVER_STATE (default target/s3-server).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv-moto"
moto_version="5.2.5"
s3s_version="0.14.1"
s3s_root="${S3S_FS_ROOT:-$root/.tools/s3s-fs}"
kind="${S3_SERVER_KIND:-moto}"
state="${S3_SERVER_STATE:-$root/target/s3-server}"
access_key="AKIASHARDSTESTKEY000"
secret_key="shards-test-secret-never-printed"

log() { echo "s3-server: $*" >&2; }

install() {
    case "$kind" in
        moto) install_moto ;;
        s3s) install_s3s ;;
        *)
            log "unknown S3_SERVER_KIND '$kind' (moto or s3s)"
            exit 2
            ;;
    esac
}

install_s3s() {
    local bin="$s3s_root/bin/s3s-fs"
    if [[ -x "$bin" ]] && [[ "$("$bin" --version)" == "s3s-fs $s3s_version" ]]; then
        return
    fi
    log "installing s3s-fs $s3s_version into $s3s_root (cargo install, about 3 minutes)"
    nice cargo install --quiet --locked --force --root "$s3s_root" --version "$s3s_version" \
        --features binary s3s-fs >&2
}

# The TCP_NODELAY shim (scripts/s3-nodelay.c), rebuilt when the source is newer.
nodelay_shim() {
    local so="$s3s_root/lib/s3-nodelay.so" src="$root/scripts/s3-nodelay.c"
    if [[ ! -e "$so" || "$src" -nt "$so" ]]; then
        mkdir -p "$(dirname "$so")"
        cc -shared -fPIC -O2 -Wall -o "$so" "$src" -ldl >&2
    fi
    echo "$so"
}

install_moto() {
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
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start() {
    install
    mkdir -p "$state"
    if [[ -e "$state/pid" ]] && kill -0 "$(cat "$state/pid")" 2>/dev/null; then
        log "already running (pid $(cat "$state/pid")); stop it first"
        exit 1
    fi
    local port="${1:-$(free_port)}"
    local name
    if [[ "$kind" == s3s ]]; then
        name="s3s-fs $s3s_version (TCP_NODELAY)"
        local shim
        shim="$(nodelay_shim)"
        rm -rf "$state/s3s-data"
        mkdir -p "$state/s3s-data"
        LD_PRELOAD="$shim" "$s3s_root/bin/s3s-fs" --host 127.0.0.1 --port "$port" \
            --access-key "$access_key" --secret-key "$secret_key" "$state/s3s-data" \
            >"$state/server.log" 2>&1 &
    else
        name="moto $moto_version"
        "$venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$state/server.log" 2>&1 &
    fi
    local pid=$!
    echo "$pid" >"$state/pid"
    echo "$port" >"$state/port"
    local url="http://127.0.0.1:$port"
    for _ in $(seq 1 100); do
        # Any HTTP answer will do (s3s-fs answers an unsigned request with 403).
        if curl -sS -o /dev/null "$url/" 2>/dev/null; then
            log "$name listening on $url (pid $pid)"
            cat <<VARS
export AWS_ENDPOINT_URL=$url
export AWS_ACCESS_KEY_ID=$access_key
export AWS_SECRET_ACCESS_KEY=$secret_key
export AWS_REGION=us-east-1
export AWS_EC2_METADATA_DISABLED=true
export S3_SERVER_KIND=$kind
VARS
            [[ "$kind" == s3s ]] || echo "export MOTO_SERVER=$venv/bin/moto_server"
            return
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            log "$name exited during start; its log:"
            cat "$state/server.log" >&2
            rm -f "$state/pid"
            exit 1
        fi
        sleep 0.2
    done
    log "$name did not answer on $url within 20 s"
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
    rm -rf "$state/s3s-data"
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
