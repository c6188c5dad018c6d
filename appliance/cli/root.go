// Package cli is Outpost's command tree (cobra). Each command turns flags
// into options, calls one library verb (through the daemon's control API when
// a daemon runs, directly otherwise) and prints the result, as a table for
// people or JSON with --json. It is the only importer of cobra.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/spf13/cobra"

	"github.com/outpostdev/outpost/appliance/daemon"
)

// Version is set at build time with -ldflags.
var Version = "dev"

// Streams are the command's standard streams.
type Streams struct {
	In       io.Reader
	Out, Err io.Writer
}

// globals are the flags every command has.
type globals struct {
	stateDir   string
	runtimeDir string
	logLevel   string
	streams    Streams
	log        *slog.Logger
}

// Run executes the command line args and returns the process exit code.
func Run(ctx context.Context, args []string, s Streams) int {
	root := newRoot(s)
	root.SetArgs(args)
	root.SetIn(s.In)
	root.SetOut(s.Out)
	root.SetErr(s.Err)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	var ec *exitCodeError
	if errors.As(err, &ec) {
		if ec.msg != "" {
			fmt.Fprintln(s.Err, "outpost:", ec.msg)
		}
		return ec.code
	}
	fmt.Fprintln(s.Err, "outpost:", err)
	return 1
}

// exitCodeError ends the process with a specific status.
type exitCodeError struct {
	code int
	msg  string
}

func (e *exitCodeError) Error() string { return fmt.Sprintf("exit status %d: %s", e.code, e.msg) }

func newRoot(s Streams) *cobra.Command {
	g := &globals{streams: s}
	root := &cobra.Command{
		Use:   "outpost",
		Short: "Run a Compose-defined appliance on rootless Podman, online or air-gapped",
		Long: `Outpost turns a multi-container product, defined by its Compose file and an
x-outpost extension, into an appliance on one Linux box: rootless Podman,
health-gated start, supervision, and state in SQLite.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       Version,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			var lvl slog.Level
			if err := lvl.UnmarshalText([]byte(g.logLevel)); err != nil {
				return fmt.Errorf("--log-level: %w", err)
			}
			g.log = slog.New(slog.NewTextHandler(s.Err, &slog.HandlerOptions{Level: lvl}))
			return nil
		},
	}
	pf := root.PersistentFlags()
	pf.StringVar(&g.stateDir, "state-dir", "", "state directory (default $OUTPOST_STATE_DIR, /var/lib/outpost as root, ~/.local/state/outpost otherwise)")
	pf.StringVar(&g.runtimeDir, "runtime-dir", "", "runtime directory for sockets (default $OUTPOST_RUNTIME_DIR, $XDG_RUNTIME_DIR/outpost)")
	pf.StringVar(&g.logLevel, "log-level", "warn", "log level: debug, info, warn, error")
	root.AddCommand(
		newUpCmd(g), newDownCmd(g), newStatusCmd(g), newLogsCmd(g), newEventsCmd(g),
		newConfigCmd(g), newDoctorCmd(g), newRunCmd(g), newVersionCmd(g), newDemoRoleCmd(g), newDemoImageCmd(g),
	)
	root.AddCommand(serviceCommands(g)...)
	root.AddCommand(backupCommands(g)...)
	root.AddCommand(volumeCommands(g)...)
	root.AddCommand(newProxyCmd(g))
	root.AddCommand(newCheckCmd(g))
	root.AddCommand(newBundleCmd(g))
	root.AddCommand(newExportCmd(g))
	root.AddCommand(upgradeCommands(g)...)
	return root
}

func (g *globals) paths() (daemon.Paths, error) {
	p, err := daemon.DefaultPaths()
	if err != nil {
		return p, err
	}
	if g.stateDir != "" {
		p.StateDir = g.stateDir
	}
	if g.runtimeDir != "" {
		p.RuntimeDir = g.runtimeDir
	}
	return p, nil
}

// openEnv opens the store and Podman connection for a local operation.
func (g *globals) openEnv(ctx context.Context) (*daemon.Env, error) {
	p, err := g.paths()
	if err != nil {
		return nil, err
	}
	return daemon.Open(ctx, p, g.log)
}

// client returns a control-API client when a daemon runs, else nil.
func (g *globals) client() *daemon.Client {
	p, err := g.paths()
	if err != nil {
		return nil
	}
	c, err := daemon.Dial(p.SocketPath())
	if err != nil {
		return nil
	}
	return c
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// progressPrinter prints "service  message" lines aligned.
func progressPrinter(w io.Writer) func(string, string) {
	return func(svc, msg string) {
		if svc == "" {
			fmt.Fprintf(w, "%s\n", msg)
			return
		}
		fmt.Fprintf(w, "%-14s %s\n", svc, msg)
	}
}

func indent(s, prefix string) string {
	return prefix + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n"+prefix)
}
