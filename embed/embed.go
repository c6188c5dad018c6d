// Package assets holds the files compiled into the outpost binary. Import
// it as `assets "github.com/outpostdev/outpost/embed"`.
package assets

import "embed"

// FS holds the embedded assets:
//
//	demo/compose.yml  the default appliance `outpost up` runs without -f;
//	                  its image is built offline by appliance/demo
//	demo/README.md    what the demo is
//
//go:embed demo
var FS embed.FS

// DemoCompose is the path of the demo appliance's Compose file in FS.
const DemoCompose = "demo/compose.yml"
