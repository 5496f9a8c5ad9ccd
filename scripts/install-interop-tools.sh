#!/usr/bin/env bash
# Install the stock `age` and `minisign` tools (Debian packages age 1.1.1 and
# minisign 0.11) for tests/test_interop.py. Idempotent, and never fails the
# build: when the tools cannot be installed it says so and exits 0; the
# interop tests then skip (outside CI) or fail (under CI=true).
#
# Called by `make test`; also usable by hand: bash scripts/install-interop-tools.sh
set -u

have_all() { command -v age >/dev/null 2>&1 && command -v minisign >/dev/null 2>&1; }
versions() { printf 'age %s, minisign %s\n' "$(age --version 2>/dev/null)" "$(minisign -v 2>/dev/null | sed 's/^minisign //')"; }

if have_all; then
    echo "interop tools: already installed ($(versions))"
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "interop tools: age/minisign missing and not root; install them with: sudo apt-get install age minisign"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "interop tools: age/minisign missing and no apt-get here; install them with your package manager"
    exit 0
fi
echo "interop tools: installing the Debian packages age and minisign"
if apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq age minisign >/dev/null; then
    if have_all; then
        echo "interop tools: installed ($(versions))"
    else
        echo "interop tools: apt-get succeeded but age/minisign are still not on PATH"
    fi
else
    echo "interop tools: apt-get failed; the interop tests will skip (or fail under CI=true)"
fi
exit 0
