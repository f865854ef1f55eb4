#!/usr/bin/env bash
# Build blockd, blockcat and the provider plugins from this checkout and
# install them under PREFIX (default /usr/local):
#
#   PREFIX/bin/blockd, PREFIX/bin/blockcat
#   PREFIX/lib/blockxfer/plugins/blockxfer-provider-{udmabuf,gpu,example}
#       (blockd and blockcat look there, beside their own directory, when
#       --plugin-dir and $BLOCKXFER_PLUGIN_DIR are not given)
#   PREFIX/share/bash-completion/completions/{blockd,blockcat}
#   PREFIX/share/zsh/site-functions/{_blockd,_blockcat}
#   PREFIX/lib/systemd/system/blockd.service  (packaging/blockd.service,
#       ExecStart pointing at PREFIX/bin/blockd)
#   PREFIX/lib/systemd/system/blockcat-agent.service  (packaging/
#       blockcat-agent.service, ExecStart pointing at PREFIX/bin/blockcat)
#   PREFIX/share/man/man1/{blockd,blockcat}.1  (docs/man, what 'blockd man'
#       and 'blockcat man' print)
#
#   scripts/install.sh                      # /usr/local (as root)
#   scripts/install.sh "$HOME/.local"       # your home: put ~/.local/bin on PATH
#   DESTDIR=/tmp/stage scripts/install.sh /usr   # stage a package under /tmp/stage/usr
#
# The binaries record the git revision (+dirty for uncommitted changes) and
# the build time, which --version prints. Environment: GO (the go command),
# DESTDIR (a staging root), VERSION (a version to stamp, such as v1.2.0,
# instead of the one the go command derives), SOURCE_DATE_EPOCH (the build
# time to record, for reproducible builds).
set -euo pipefail

usage() {
	sed -n '2,/^set -e/{/^set -e/d;s/^# \{0,1\}//;p}' "$0"
}
case "${1:-}" in
-h | --help)
	usage
	exit 0
	;;
-*)
	echo "install.sh: unknown option $1" >&2
	usage >&2
	exit 2
	;;
esac
if [ $# -gt 1 ]; then
	echo "install.sh: want at most one argument, PREFIX" >&2
	exit 2
fi
prefix=${1:-/usr/local}
case "$prefix" in
/*) ;;
*)
	echo "install.sh: PREFIX must be an absolute path, not $prefix" >&2
	exit 2
	;;
esac
prefix=${prefix%/}
root="${DESTDIR:-}$prefix"
GO=${GO:-go}
plugins=(udmabuf gpu example)

cd "$(dirname "$0")/.."
build=$(mktemp -d -t blockxfer-install.XXXXXX)
trap 'rm -rf "$build"' EXIT

pkg=github.com/blockxfer/blockxfer/internal/buildinfo
if [ -n "${SOURCE_DATE_EPOCH:-}" ]; then
	built=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)
else
	built=$(date -u +%Y-%m-%dT%H:%M:%SZ)
fi
ldflags="-X $pkg.buildTime=$built"
if [ -n "${VERSION:-}" ]; then
	ldflags="$ldflags -X $pkg.version=$VERSION"
fi

# One go build for all five binaries, so they build in parallel. With
# -buildvcs=auto the go command records the revision when this is a git
# checkout and git is installed (overriding GOFLAGS=-buildvcs=false).
echo "building blockd, blockcat and the ${plugins[*]} plugins" >&2
pkgs=(./cmd/blockd ./cmd/blockcat)
for p in "${plugins[@]}"; do
	pkgs+=("./providers/$p")
done
"$GO" build -buildvcs=auto -ldflags "$ldflags" -o "$build/" "${pkgs[@]}"

install -d "$root/bin" "$root/lib/blockxfer/plugins" "$root/lib/systemd/system" \
	"$root/share/bash-completion/completions" "$root/share/zsh/site-functions" "$root/share/man/man1"
install -m 0755 "$build/blockd" "$build/blockcat" "$root/bin/"
for p in "${plugins[@]}"; do
	install -m 0755 "$build/$p" "$root/lib/blockxfer/plugins/blockxfer-provider-$p"
done
sed "s|/usr/local/bin/blockd|$prefix/bin/blockd|g" packaging/blockd.service >"$build/blockd.service"
install -m 0644 "$build/blockd.service" "$root/lib/systemd/system/blockd.service"
sed "s|/usr/local/bin/blockcat|$prefix/bin/blockcat|g" packaging/blockcat-agent.service >"$build/blockcat-agent.service"
install -m 0644 "$build/blockcat-agent.service" "$root/lib/systemd/system/blockcat-agent.service"
# The man pages are kept equal to what the binaries print by a test.
install -m 0644 docs/man/blockd.1 docs/man/blockcat.1 "$root/share/man/man1/"

# The completion scripts come from the binaries' own flag sets; a binary
# built for another machine (GOOS, GOARCH) cannot run here to print them.
if "$build/blockcat" version >/dev/null 2>&1; then
	for b in blockd blockcat; do
		"$build/$b" completion bash >"$build/$b.bash"
		"$build/$b" completion zsh >"$build/_$b"
		install -m 0644 "$build/$b.bash" "$root/share/bash-completion/completions/$b"
		install -m 0644 "$build/_$b" "$root/share/zsh/site-functions/_$b"
	done
else
	echo "install.sh: not installing shell completions: the binaries do not run on this machine" >&2
fi

"$build/blockd" --version 2>/dev/null | sed 's/^/  /' >&2 || true
cat >&2 <<MSG
installed into $root:
  bin/blockd, bin/blockcat
  lib/blockxfer/plugins/blockxfer-provider-{$(
	IFS=,
	echo "${plugins[*]}"
)}
  lib/systemd/system/blockd.service, bash and zsh completions and man pages under share/
Check the plugins with: $prefix/bin/blockcat providers
Run blockd as a service: see the comments at the top of blockd.service.
MSG
