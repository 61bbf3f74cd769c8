#!/usr/bin/env bash
# `make test-aarch64`: cross-compile the standalone kernel parity test (engine/native/tests) for aarch64 with Debian's
# g++-aarch64-linux-gnu and run it under qemu-aarch64 (user-mode emulation): the baseline and NEON kernel
# variants against the scalar reference. Checks correctness only; emulated speed means nothing.
# Missing tools are installed with apt-get when run as root; otherwise (or if that fails) it prints one
# "SKIP: ..." line and exits 0. A kernel mismatch exits 1.
set -euo pipefail
cd "$(dirname "$0")/.."
CXX_A64=${CXX_A64:-aarch64-linux-gnu-g++}
QEMU_A64=${QEMU_A64:-qemu-aarch64}
PKGS="g++-aarch64-linux-gnu qemu-user"

have_tools() { command -v "$CXX_A64" >/dev/null 2>&1 && command -v "$QEMU_A64" >/dev/null 2>&1; }

if ! have_tools; then
  if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "SKIP: test-aarch64 needs $CXX_A64 and $QEMU_A64 (as root: apt-get install $PKGS)"
    exit 0
  fi
  log=$(mktemp)
  echo "test-aarch64: installing $PKGS (apt-get)"
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        $PKGS; } >"$log" 2>&1; then
    tail -n 3 "$log"
    echo "SKIP: test-aarch64: apt-get could not install $PKGS"
    rm -f "$log"
    exit 0
  fi
  rm -f "$log"
  if ! have_tools; then
    echo "SKIP: test-aarch64: $CXX_A64 / $QEMU_A64 still missing after installing $PKGS"
    exit 0
  fi
fi

make --no-print-directory -C engine/native/tests ARCH=aarch64 CXX="$CXX_A64" EMU="$QEMU_A64" run
