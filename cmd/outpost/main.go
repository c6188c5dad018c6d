// Command outpost runs a Compose-defined appliance on rootless Podman. All
// behaviour lives in appliance/; main only wires the process to the CLI.
package main

import (
	"context"
	"os"

	"github.com/outpostdev/outpost/appliance/cli"
)

func main() {
	os.Exit(cli.Run(context.Background(), os.Args[1:], cli.Streams{In: os.Stdin, Out: os.Stdout, Err: os.Stderr}))
}
