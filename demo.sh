#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Runs forksafe's demo: the seed's fork-while-locked deadlock caught, and each
# component preventing it. Installs missing build dependencies with apt-get first.
set -euo pipefail
cd "$(dirname "$0")"
source tools/deps.sh
ensure_deps
mkdir -p build
configure_and_build build/demo g++ -Dtests=disabled -Dbenchmarks=disabled -Dexamples=enabled -Dbuildtype=release
echo
exec build/demo/examples/demo
