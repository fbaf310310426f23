#!/usr/bin/env bash
# Create .interop-venv with the py-libp2p 0.8.1 reference peer used by the interop tests.
# Idempotent: when the venv already imports libp2p 0.8.1 this returns in well under a second.
# fastecdsa (a py-libp2p dependency) compiles against GMP, so gcc and libgmp-dev are
# installed with apt-get when missing (apt-get update only if the first install fails).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${INTEROP_VENV:-.interop-venv}"
WANT="0.8.1"

if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c \
    "import importlib.metadata as m, sys; sys.exit(m.version('libp2p') != '$WANT')" 2>/dev/null; then
    exit 0
fi

need_pkgs=()
command -v gcc >/dev/null 2>&1 || need_pkgs+=(gcc)
dpkg -s libgmp-dev >/dev/null 2>&1 || need_pkgs+=(libgmp-dev)
if [ "${#need_pkgs[@]}" -gt 0 ]; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
    export DEBIAN_FRONTEND=noninteractive
    if ! $SUDO apt-get install -y -q "${need_pkgs[@]}"; then
        # Without root the install cannot work; pip may still find prebuilt wheels.
        $SUDO apt-get update -q && $SUDO apt-get install -y -q "${need_pkgs[@]}" ||
            echo "warning: could not install ${need_pkgs[*]}; trying pip anyway" >&2
    fi
fi

rm -rf "$VENV"
python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
"$VENV/bin/python" -m pip install -q --disable-pip-version-check "libp2p==$WANT"
"$VENV/bin/python" -c "import libp2p; print('py-libp2p', '$WANT', 'ready in $VENV')"
