#!/bin/sh
# e2e-postgres-image.sh builds a real PostgreSQL image offline from Debian's
# packages for the backup/restore end-to-end tests, and imports it into the
# test user's rootless Podman storage as localhost/outpost-e2e-postgres:15.
# Run as root (debootstrap needs it). The root filesystem tarball is cached
# in /var/cache/outpost-e2e, keyed by the package list and this script, so
# the ~2 minute debootstrap runs once per machine; the import is skipped when
# the user's image already carries the same key. Idempotent.
set -eu

TEST_USER="${OUTPOST_TEST_USER:-outpost-test}"
IMAGE="${OUTPOST_E2E_POSTGRES_IMAGE:-localhost/outpost-e2e-postgres:15}"
CACHE="${OUTPOST_E2E_CACHE:-/var/cache/outpost-e2e}"
SUITE=bookworm
PACKAGES="postgresql-15"

log() { printf 'e2e-postgres-image: %s\n' "$*" >&2; }

# The Debian mirror this host already uses (deb822 or one-line sources).
mirror() {
	m=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '/^URIs:/{print $2; exit}')
	[ -n "$m" ] || m=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
		awk '$1=="deb" && $0 !~ /security/ {for(i=2;i<=NF;i++) if($i ~ /^https?:/){print $i; exit}}')
	printf '%s' "${m:-http://deb.debian.org/debian}"
}

# The entrypoint: initialise the cluster into the (empty) data volume on
# first start, then run the server in the foreground as the postgres user.
entrypoint() {
	cat <<'EOF'
#!/bin/sh
set -e
PGDATA="${PGDATA:-/var/lib/postgresql/data}"
export PGDATA
if [ ! -s "$PGDATA/PG_VERSION" ]; then
	initdb --username=postgres --auth=trust --encoding=UTF8 --no-instructions -D "$PGDATA" >/tmp/initdb.log 2>&1 || { cat /tmp/initdb.log >&2; exit 1; }
	printf "listen_addresses = '*'\nunix_socket_directories = '/tmp'\n" >>"$PGDATA/postgresql.conf"
	printf 'host all all all trust\n' >>"$PGDATA/pg_hba.conf"
fi
exec postgres -D "$PGDATA" "$@"
EOF
}

build_rootfs() {
	key=$1
	tarball="$CACHE/postgres-rootfs.tar"
	if [ -f "$tarball" ] && [ "$(cat "$CACHE/postgres-rootfs.key" 2>/dev/null)" = "$key" ]; then
		log "cached root filesystem $tarball ($key)"
		return
	fi
	command -v debootstrap >/dev/null 2>&1 || {
		log "installing debootstrap"
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
	}
	mkdir -p "$CACHE"
	dir=$(mktemp -d "$CACHE/rootfs.XXXXXX")
	trap 'umount "$dir/proc" 2>/dev/null || true; rm -rf "$dir"' EXIT
	log "debootstrap $SUITE from $(mirror) (about 2 minutes)"
	debootstrap --variant=minbase "$SUITE" "$dir" "$(mirror)" >"$CACHE/debootstrap.log" 2>&1 || {
		tail -20 "$CACHE/debootstrap.log" >&2
		exit 1
	}
	# Never start services inside the build root.
	printf '#!/bin/sh\nexit 101\n' >"$dir/usr/sbin/policy-rc.d"
	chmod 0755 "$dir/usr/sbin/policy-rc.d"
	mount -t proc proc "$dir/proc"
	log "installing $PACKAGES"
	chroot "$dir" sh -c "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $PACKAGES" >"$CACHE/apt.log" 2>&1 || {
		tail -20 "$CACHE/apt.log" >&2
		exit 1
	}
	umount "$dir/proc"
	rm -f "$dir/usr/sbin/policy-rc.d"
	# The package's default cluster is not used: the entrypoint creates one
	# in the data volume.
	rm -rf "$dir/var/lib/postgresql/15" "$dir/etc/postgresql/15" "$dir/var/lib/apt/lists/"* "$dir/var/cache/apt/"*.bin
	entrypoint >"$dir/usr/local/bin/outpost-pg-entrypoint"
	chmod 0755 "$dir/usr/local/bin/outpost-pg-entrypoint"
	# The data directory exists in the image, owned by postgres with the
	# mode initdb wants, so a new volume mounted there inherits both.
	# (chroot: the owner is the image's postgres user, not the host's.)
	chroot "$dir" install -d -m 0700 -o postgres -g postgres /var/lib/postgresql/data
	# Documentation and translations are not needed to run the server.
	rm -rf "$dir/usr/share/doc/"* "$dir/usr/share/man/"* "$dir/usr/share/info/"* "$dir/usr/share/locale/"*
	tar -C "$dir" --numeric-owner -cf "$tarball.tmp" .
	mv "$tarball.tmp" "$tarball"
	chmod 0644 "$tarball"
	printf '%s\n' "$key" >"$CACHE/postgres-rootfs.key"
	rm -rf "$dir"
	trap - EXIT
	log "built $tarball"
}

as_user() {
	uid=$(id -u "$TEST_USER")
	(cd / && runuser -u "$TEST_USER" -- env HOME="$(getent passwd "$TEST_USER" | cut -d: -f6)" XDG_RUNTIME_DIR="/run/user/$uid" PATH=/usr/local/bin:/usr/bin:/bin "$@")
}

import_image() {
	key=$1
	have=$(as_user podman image inspect --format '{{index .Labels "io.outpost.e2e.key"}}' "$IMAGE" 2>/dev/null || true)
	if [ "$have" = "$key" ]; then
		log "$IMAGE is up to date for $TEST_USER"
		return
	fi
	chmod 0755 "$CACHE"
	log "importing $IMAGE for $TEST_USER"
	as_user podman import \
		--change 'ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
		--change 'ENV PGDATA=/var/lib/postgresql/data' \
		--change 'ENV PGHOST=/tmp' \
		--change 'ENV LANG=C.UTF-8' \
		--change 'USER postgres' \
		--change 'WORKDIR /var/lib/postgresql' \
		--change 'ENTRYPOINT ["/usr/local/bin/outpost-pg-entrypoint"]' \
		--change 'STOPSIGNAL SIGINT' \
		--change "LABEL io.outpost.e2e.key=$key" \
		"$CACHE/postgres-rootfs.tar" "$IMAGE" >/dev/null
}

main() {
	if [ "$(id -u)" -ne 0 ]; then
		log "must run as root (debootstrap); run it through 'make e2e'"
		exit 1
	fi
	key=$( (printf '%s %s\n' "$SUITE" "$PACKAGES"; entrypoint; sed -n '/^build_rootfs/,/^}/p' "$0") | sha256sum | cut -c1-16)
	build_rootfs "$key"
	import_image "$key"
}

main "$@"
