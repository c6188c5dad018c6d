#!/bin/sh
# Starts `outpost run` in the background for `make demo`, so the embedded
# proxy serves the demo appliance, and waits until it answers. Run as the
# user that runs the appliance, from the directory holding ./outpost.
# Idempotent: a daemon already answering is kept.
set -eu

main() {
	port="${OUTPOST_DEMO_HTTPS_PORT:-18443}"
	state="${OUTPOST_STATE_DIR:-${XDG_STATE_HOME:-$HOME/.local/state}/outpost}"
	log="${XDG_RUNTIME_DIR:-/tmp}/outpost-demo-run.log"
	if ./outpost status --json 2>/dev/null | grep -q '"daemon": true'; then
		echo "demo: an outpost daemon already runs"
	else
		nohup ./outpost run --log-level info >"$log" 2>&1 &
		echo $! >"${XDG_RUNTIME_DIR:-/tmp}/outpost-demo-run.pid"
		echo "demo: started the daemon (pid $!, log $log)"
	fi
	i=0
	# The binary's own probe, trusting the local CA (no curl needed).
	until SSL_CERT_FILE="$state/proxy/ca-root.crt" ./outpost demo-role probe \
		--http "https://localhost:$port/" --http "https://localhost:$port/api/hello" >/dev/null 2>&1; do
		i=$((i + 1))
		if [ "$i" -ge 120 ]; then
			echo "demo: the embedded proxy did not answer on https://localhost:$port within 2 minutes; see $log" >&2
			exit 1
		fi
		sleep 1
	done
}

main "$@"
