package proxy

import (
	_ "unsafe" // for go:linkname

	_ "github.com/caddyserver/caddy/v2/notify" // the package whose variable is silenced below
)

// caddyNotifySocket is Caddy's copy of $NOTIFY_SOCKET, read when its
// notify package initialises. caddy.Load tells systemd READY=1 after every
// config load, and the proxy is loaded first, before the appliance is
// healthy: under Type=notify systemd would report Outpost started too
// early. Outpost sends READY itself (daemon.Run) once every service is
// healthy, so Caddy's notifications are switched off by emptying its copy.
// If Caddy renames the variable, linking fails loudly rather than silently
// notifying again.
//
//go:linkname caddyNotifySocket github.com/caddyserver/caddy/v2/notify.socketPath
var caddyNotifySocket string

func init() {
	// Runs after the notify package's initialisation (this package imports
	// it), so the value read from the environment is overwritten.
	caddyNotifySocket = ""
}
