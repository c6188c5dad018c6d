// Package systemd holds the systemd unit templates Outpost installs, so the
// unit lives in one place: install.sh hands over to `outpost install`, which
// renders these through appliance/service. The package only embeds files.
package systemd

import _ "embed"

// ServiceTemplate is the text/template of the system unit of one installed
// appliance (outpost.service.tmpl); appliance/service.Unit is its data.
//
//go:embed outpost.service.tmpl
var ServiceTemplate string
