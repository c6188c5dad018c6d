#!/bin/sh
# setup-host.sh prepares a Debian/Ubuntu box (run as root) for rootless Podman
# and for Outpost's tests: installs Podman and its helpers from the
# distribution, makes /dev/net/tun usable by unprivileged users, and creates
# the unprivileged user the tests run Podman as. Idempotent.
set -eu

TEST_USER="${OUTPOST_TEST_USER:-outpost-test}"

log() { printf 'setup-host: %s\n' "$*" >&2; }

need_pkgs() {
	missing=""
	for p in "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"
	done
	printf '%s' "$missing"
}

install_packages() {
	# netavark + aardvark-dns give containers name resolution and catatonit
	# is Podman's init (Compose `init: true`); Debian lists them only as
	# recommendations of podman, so a --no-install-recommends install lacks
	# them and Podman falls back to CNI with no DNS between containers.
	missing=$(need_pkgs podman runc uidmap slirp4netns fuse-overlayfs netavark aardvark-dns catatonit busybox-static iproute2 ${EXTRA_PACKAGES:-})
	if [ -n "$missing" ]; then
		log "installing:$missing"
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
	fi
}

fix_tun() {
	if [ ! -e /dev/net/tun ]; then
		mkdir -p /dev/net
		mknod /dev/net/tun c 10 200
	fi
	# Rootless networking (slirp4netns) opens /dev/net/tun as the user;
	# ordinary distributions ship it 0666.
	chmod 0666 /dev/net/tun
}

make_user() {
	if ! id "$TEST_USER" >/dev/null 2>&1; then
		log "creating user $TEST_USER"
		useradd -m -s /bin/sh "$TEST_USER"
	fi
	for f in /etc/subuid /etc/subgid; do
		touch "$f"
		if ! grep -q "^$TEST_USER:" "$f"; then
			# Pick a range above every range already handed out.
			start=$(awk -F: 'BEGIN{m=100000}{e=$2+$3; if(e>m)m=e}END{print m}' "$f")
			echo "$TEST_USER:$start:65536" >>"$f"
		fi
	done
	uid=$(id -u "$TEST_USER")
	home=$(getent passwd "$TEST_USER" | cut -d: -f6)
	mkdir -p "/run/user/$uid"
	chown "$TEST_USER:" "/run/user/$uid"
	chmod 0700 "/run/user/$uid"
	mkdir -p "$home/.config/containers"
	# Overlay storage instead of the slow vfs fallback.
	if [ ! -f "$home/.config/containers/storage.conf" ]; then
		printf '[storage]\ndriver = "overlay"\n' >"$home/.config/containers/storage.conf"
	fi
	# The plain podman CLI (used by tests and benchmark peers) needs the same
	# host fit that Outpost generates for its own podman service.
	nofile=$(ulimit -Hn)
	[ "$nofile" = unlimited ] && nofile=1048576
	[ "$nofile" -gt 65536 ] && nofile=65536
	runtime=runc
	[ -f /sys/fs/cgroup/cgroup.controllers ] && command -v crun >/dev/null 2>&1 && runtime=crun
	cat >"$home/.config/containers/containers.conf" <<CONF
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=4096:4096"]
[engine]
runtime = "$runtime"
CONF
	chown -R "$TEST_USER:" "$home/.config"
}

# heal_podman repairs the test user's rootless Podman when its user namespace
# holder is gone but its state still says containers run (the session that
# started them was killed, and /run is not a tmpfs here, so no reboot wipes
# the state): every podman command then fails with "invalid internal
# status". `podman system migrate` marks those containers stopped and lets
# the next command start a fresh pause process.
heal_podman() {
	uid=$(id -u "$TEST_USER")
	home=$(getent passwd "$TEST_USER" | cut -d: -f6)
	err=$(cd / && runuser -u "$TEST_USER" -- env HOME="$home" XDG_RUNTIME_DIR="/run/user/$uid" PATH=/usr/local/bin:/usr/bin:/bin podman info 2>&1 >/dev/null) && return 0
	case "$err" in
	*"system migrate"*)
		log "rootless Podman of $TEST_USER lost its pause process; running podman system migrate"
		(cd / && runuser -u "$TEST_USER" -- env HOME="$home" XDG_RUNTIME_DIR="/run/user/$uid" PATH=/usr/local/bin:/usr/bin:/bin podman system migrate) >/dev/null 2>&1 || true
		;;
	esac
	err=$(cd / && runuser -u "$TEST_USER" -- env HOME="$home" XDG_RUNTIME_DIR="/run/user/$uid" PATH=/usr/local/bin:/usr/bin:/bin podman info 2>&1 >/dev/null) || {
		log "rootless Podman does not work for $TEST_USER: $err"
		exit 1
	}
}

# fix_network_backend moves the test user's Podman from CNI to netavark when
# it chose CNI because netavark was missing at its first run (it records the
# choice in its storage and keeps it). Only when the user has no containers:
# networks of the other backend would be unusable.
fix_network_backend() {
	uid=$(id -u "$TEST_USER")
	home=$(getent passwd "$TEST_USER" | cut -d: -f6)
	f="$home/.local/share/containers/storage/defaultNetworkBackend"
	[ "$(cat "$f" 2>/dev/null)" = cni ] || return 0
	[ -x /usr/lib/podman/netavark ] || [ -x /usr/libexec/podman/netavark ] || return 0
	n=$(cd / && runuser -u "$TEST_USER" -- env HOME="$home" XDG_RUNTIME_DIR="/run/user/$uid" PATH=/usr/local/bin:/usr/bin:/bin podman ps -aq 2>/dev/null | wc -l)
	if [ "$n" -ne 0 ]; then
		log "warning: Podman of $TEST_USER uses CNI (no DNS between containers) and has $n containers; remove them and run again to switch to netavark"
		return 0
	fi
	log "switching Podman of $TEST_USER from CNI to netavark"
	printf 'netavark' >"$f"
}

main() {
	if [ "$(id -u)" -ne 0 ]; then
		log "must run as root"
		exit 1
	fi
	install_packages
	fix_tun
	make_user
	heal_podman
	fix_network_backend
	log "ready: rootless Podman works for user $TEST_USER"
}

main "$@"
