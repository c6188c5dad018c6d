#!/bin/sh
# install.sh installs an Outpost appliance as a system service, from the
# directory this script is in (a release or an unpacked bundle: the outpost
# binary, its .sha256 file, the Compose files). No network is needed unless
# Podman is missing and the distribution's package mirror must provide it.
#
#   sudo sh install.sh -f compose.yml [--name NAME] [outpost install flags]
#   sudo sh bin/install.sh --bundle app.outpost [--pubkey vendor.pub]
#
# From a bundle (install.sh and the binary taken out of it with
# `outpost bundle extract --what outpost,installer` or `zstd -dc | tar -x bin/`),
# `outpost install --bundle` verifies the whole bundle before changing
# anything and loads its images; without -f or --bundle, the one *.outpost
# file beside this script (or in its parent directory) is used.
#
# It detects the architecture, verifies the binary against its .sha256 file,
# installs Podman from the distribution when it is missing (apt on
# Debian/Ubuntu, dnf on RHEL-likes), and hands over to `outpost install`,
# which owns everything else (user, directories, secrets, systemd unit; see
# docs/operations.md). Running it again is safe: `outpost install` changes
# only what differs.
#
# Environment:
#   OUTPOST_BINARY   the outpost binary to use (default: found beside this script)
#   OUTPOST_NO_PODMAN_INSTALL=1   never install Podman (fail if missing)
set -eu

log() { printf 'install.sh: %s\n' "$*" >&2; }
die() {
	log "$*"
	exit 1
}

# arch maps `uname -m` to the names release binaries use.
arch() {
	m=$(uname -m)
	case "$m" in
	x86_64 | amd64) echo amd64 ;;
	aarch64 | arm64) echo arm64 ;;
	*) die "unsupported architecture $m (Outpost ships amd64 and arm64)" ;;
	esac
}

# find_binary prints the outpost binary for this architecture.
find_binary() {
	dir=$1
	a=$2
	if [ -n "${OUTPOST_BINARY:-}" ]; then
		[ -f "$OUTPOST_BINARY" ] || die "OUTPOST_BINARY=$OUTPOST_BINARY does not exist"
		echo "$OUTPOST_BINARY"
		return
	fi
	for c in "$dir/outpost-linux-$a" "$dir/outpost" "$dir/bin/outpost-linux-$a" "$dir/bin/outpost"; do
		if [ -f "$c" ]; then
			echo "$c"
			return
		fi
	done
	die "no outpost binary for linux/$a beside $0 (looked for outpost-linux-$a and outpost in $dir and $dir/bin)"
}

# verify checks the binary against BINARY.sha256 ("<hex>" or "<hex>  name").
verify() {
	bin=$1
	sumfile="$bin.sha256"
	[ -f "$sumfile" ] || die "$sumfile is missing: refusing to install an unverified binary (it ships beside the binary in every release and bundle)"
	want=$(awk 'NR==1 {print $1}' "$sumfile")
	case "$want" in
	[0-9a-f][0-9a-f][0-9a-f][0-9a-f]*) ;;
	*) die "$sumfile does not hold a sha256 checksum" ;;
	esac
	command -v sha256sum >/dev/null 2>&1 || die "sha256sum is missing (coreutils)"
	got=$(sha256sum "$bin" | awk '{print $1}')
	[ "$got" = "$want" ] || die "checksum mismatch for $bin: expected $want, got $got; the file is corrupt or was tampered with"
	log "verified $bin (sha256 $got)"
}

# uses_existing_socket is true when the arguments point Outpost at an
# existing Podman socket: this host's Podman is then not needed.
uses_existing_socket() {
	for a in "$@"; do
		case "$a" in
		--container-host | --container-host=*) return 0 ;;
		esac
	done
	return 1
}

# names_definition is true when the arguments say what to install.
names_definition() {
	for a in "$@"; do
		case "$a" in
		-f | --file | --file=* | --bundle | --bundle=*) return 0 ;;
		esac
	done
	return 1
}

# find_bundle prints the single *.outpost file in the script's directory
# or its parent, or nothing.
find_bundle() {
	found=""
	n=0
	for c in "$1"/*.outpost "$1"/../*.outpost; do
		[ -f "$c" ] || continue
		n=$((n + 1))
		found=$c
	done
	[ "$n" -eq 1 ] && echo "$found"
	return 0
}

distro_family() {
	id=""
	like=""
	if [ -r /etc/os-release ]; then
		# shellcheck disable=SC1091
		id=$(. /etc/os-release && echo "${ID:-}")
		# shellcheck disable=SC1091
		like=$(. /etc/os-release && echo "${ID_LIKE:-}")
	fi
	case " $id $like " in
	*" debian "* | *" ubuntu "*) echo debian ;;
	*" rhel "* | *" fedora "* | *" centos "*) echo rhel ;;
	*) echo unknown ;;
	esac
}

ensure_podman() {
	if command -v podman >/dev/null 2>&1; then
		log "podman found: $(podman --version 2>/dev/null || echo unknown version)"
		return
	fi
	[ "${OUTPOST_NO_PODMAN_INSTALL:-}" = 1 ] && die "podman is missing and OUTPOST_NO_PODMAN_INSTALL=1; install podman first"
	case "$(distro_family)" in
	debian)
		log "installing podman from the distribution (apt)"
		apt-get update -qq || die "apt-get update failed: without network, install podman from your distribution media first"
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			podman uidmap slirp4netns fuse-overlayfs runc netavark aardvark-dns catatonit ||
			die "installing podman with apt failed; install podman, uidmap, slirp4netns, fuse-overlayfs, netavark, aardvark-dns and catatonit, then run install.sh again"
		;;
	rhel)
		log "installing podman from the distribution (dnf)"
		dnf install -y podman shadow-utils slirp4netns fuse-overlayfs ||
			die "installing podman with dnf failed; install podman, then run install.sh again"
		;;
	*)
		die "podman is missing and this distribution is not one install.sh knows (Debian/Ubuntu, RHEL/Fedora); install podman 4.3 or newer, then run install.sh again"
		;;
	esac
}

main() {
	[ "$(id -u)" -eq 0 ] || die "run as root: sudo sh $0 $*"
	[ "$(uname -s)" = Linux ] || die "Outpost runs on Linux only"
	dir=$(cd "$(dirname "$0")" && pwd)
	a=$(arch)
	bin=$(find_binary "$dir" "$a")
	verify "$bin"
	chmod 0755 "$bin" 2>/dev/null || true
	if uses_existing_socket "$@"; then
		log "using an existing Podman socket: not checking this host's Podman"
	else
		ensure_podman
	fi
	if ! names_definition "$@"; then
		b=$(find_bundle "$dir")
		if [ -n "$b" ]; then
			log "using the bundle $b"
			set -- --bundle "$b" "$@"
		fi
	fi
	log "running: outpost install $*"
	exec "$bin" install "$@"
}

main "$@"
