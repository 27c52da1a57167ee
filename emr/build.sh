#!/usr/bin/env bash
# Portable mapper and reducer for any EMR image, then (separately) their upload to S3.
#
#   emr/build.sh                      build, check, package: target/emr/streaming-bin.tgz
#   emr/build.sh upload s3://B/P/     copy the package to s3://B/P/streaming-bin.tgz
#
# EMR 5.x/6.x run Amazon Linux 2 (glibc 2.26), older than the machines we build on, so the
# binaries are linked against glibc 2.17 with cargo-zigbuild (zig as the linker; no toolchain
# download needed), and the build fails if `objdump -T` finds any GLIBC symbol version newer
# than 2.17. ziglang and cargo-zigbuild come from PyPI into .venv-zig (git-ignored);
# `cargo install cargo-zigbuild` works too but compiles for minutes on our 2-core machines.
# The package is a tar.gz so the executable bits survive Hadoop's -archives localisation.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
target=x86_64-unknown-linux-gnu
glibc=2.17
out="$root/target/emr"
pkg="$out/streaming-bin.tgz"

build() {
    local venv="$root/.venv-zig"
    if [ ! -x "$venv/bin/cargo-zigbuild" ]; then
        python3 -m venv "$venv"
        "$venv/bin/pip" install --quiet --disable-pip-version-check 'ziglang' 'cargo-zigbuild'
    fi
    # cargo-zigbuild finds zig as `python3 -m ziglang` through the venv's python3.
    (cd "$root" && PATH="$venv/bin:$PATH" cargo zigbuild --release --quiet \
        -p hadoop-streaming --bins --target "$target.$glibc")
    mkdir -p "$out"
    local bin="$root/target/$target/release"
    local worst="0.0" v
    for exe in mapper reducer; do
        v=$(objdump -T "$bin/$exe" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' \
            | sort -t. -k1,1n -k2,2n -k3,3n | tail -n 1)
        echo "$exe: highest GLIBC symbol version ${v:-none}; $(du -h "$bin/$exe" | cut -f1)"
        worst=$(printf '%s\n%s\n' "$worst" "${v:-0.0}" | sort -t. -k1,1n -k2,2n -k3,3n | tail -n 1)
    done
    if [ "$(printf '%s\n%s\n' "$worst" "$glibc" | sort -t. -k1,1n -k2,2n -k3,3n | tail -n 1)" != "$glibc" ]; then
        echo "build: GLIBC_$worst is newer than $glibc: the binaries would not run on old EMR images" >&2
        exit 1
    fi
    echo "ok: no GLIBC symbol newer than $glibc (highest: GLIBC_$worst)"
    tar -czf "$pkg" -C "$bin" mapper reducer
    echo "package: $pkg"
}

upload() {
    local dest="${1:?usage: emr/build.sh upload s3://bucket/prefix/}"
    [ -f "$pkg" ] || build
    aws s3 cp "$pkg" "${dest%/}/streaming-bin.tgz"
}

case "${1:-build}" in
build) build ;;
upload) shift; upload "$@" ;;
*) sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
