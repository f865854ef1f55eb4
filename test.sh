#!/usr/bin/env bash
# The test suite: unit, fuzz seed corpora, real-kernel, software-NIC and
# multi-process integration tests, plus the race detector on the packages
# with the most concurrency. Some tests need root (network namespaces,
# netlink binds); CI runs as root.
set -euo pipefail
cd "$(dirname "$0")"
# The block-device import test attaches a loop device: run it where we may.
if [ "$(id -u)" = 0 ] && [ -e /dev/loop-control ] && command -v losetup >/dev/null; then
	export CATALOG_TEST_LOOP=1
fi
go test -count=1 -timeout 15m ./...
go test -count=1 -race -timeout 10m ./engine/ ./transport/...
