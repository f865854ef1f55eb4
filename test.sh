#!/usr/bin/env bash
# The test suite: unit, fuzz seed corpora, real-kernel, software-NIC and
# multi-process integration tests, plus the race detector on the packages
# with the most concurrency. Some tests need root (network namespaces,
# netlink binds); CI runs as root.
set -euo pipefail
cd "$(dirname "$0")"
go test -count=1 -timeout 15m ./...
go test -count=1 -race -timeout 10m ./engine/ ./transport/...
