package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/outpostdev/outpost/appliance/daemon"
	"github.com/outpostdev/outpost/appliance/doctor"
	"github.com/outpostdev/outpost/appliance/engine"
	"github.com/outpostdev/outpost/appliance/model"
	"github.com/outpostdev/outpost/appliance/secrets"
	"github.com/outpostdev/outpost/appliance/service"
	"github.com/outpostdev/outpost/appliance/store"
)

// serviceCommands are install, uninstall, start, stop, restart and the
// service group (status and the helpers install runs as the service user).
func serviceCommands(g *globals) []*cobra.Command {
	return []*cobra.Command{
		newInstallCmd(g), newUninstallCmd(g), newServiceCmd(g),
		newServiceActionCmd(g, "start"), newServiceActionCmd(g, "stop"), newServiceActionCmd(g, "restart"),
	}
}

// installRecord is /etc/outpost/<name>/install.json: what install did, read
// by uninstall and the service commands.
type installRecord struct {
	service.Layout
	UID           int       `json:"uid"`
	GID           int       `json:"gid"`
	ContainerHost string    `json:"container_host,omitempty"`
	Args          []string  `json:"run_args"`
	Demo          bool      `json:"demo,omitempty"`
	OutpostVer    string    `json:"outpost_version"`
	InstalledAt   time.Time `json:"installed_at"`
}

const recordFile = "install.json"

type installOptions struct {
	def           defOptions
	user          string
	containerHost string
	images        []string
	bundle        string
	trust         trustFlags
	binary        string
	skipChecks    bool
	timeout       time.Duration
}

func newInstallCmd(g *globals) *cobra.Command {
	var o installOptions
	cmd := &cobra.Command{
		Use:   "install",
		Short: "Install the appliance as a systemd service running as its own unprivileged user (root)",
		Long: `Install the appliance as a system service and wait until it is healthy.

As root: creates the system user outpost-<name> (or --user) with subordinate
UID/GID ranges and its home /var/lib/outpost/<name> (state, secrets, Podman
storage), checks the host for rootless Podman (outpost doctor, as that user),
copies the definition (Compose files, env files, files they reference below
the first file's directory) into /etc/outpost/<name>, generates the secrets
the definition declares (once; a reinstall keeps them), installs the binary
as /usr/local/bin/outpost, writes the unit outpost-<name>.service from
systemd/outpost.service.tmpl, enables and starts it — systemd reports it
started only once every service is healthy — and prints the status.

With --bundle FILE the signed bundle is verified in full (signature, every
entry's checksum) before anything changes; its images are loaded into the
service user's storage (present ones skipped) and its Compose and env files
become the installed definition (-f files merge after them, --env-file
replaces its env files). Trusted keys: --pubkey, else
$OUTPOST_BUNDLE_PUBKEY, else /etc/outpost/bundle-keys/*.pub.

Running it again changes nothing, or only what changed: a new definition is
applied through the running daemon (only changed services are recreated), a
new unit restarts the service. Without -f and without a compose.yaml in the
working directory, the embedded demo appliance is installed.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.install(cmd.Context(), o)
		},
	}
	o.def.register(cmd.Flags())
	f := cmd.Flags()
	f.StringVar(&o.user, "user", "", "service user (default outpost-<name>; created when missing)")
	f.StringVar(&o.containerHost, "container-host", "", "use an existing Podman socket (e.g. unix:///run/podman/podman.sock) instead of the service user's own rootless Podman")
	f.StringArrayVar(&o.images, "image-archive", nil, "image archive (podman save / docker save) to load into the service user's storage first (repeatable)")
	f.StringVar(&o.bundle, "bundle", "", "install from this signed bundle: verify all of it first, load its images into the service user's storage, install its Compose files (-f files merge after them)")
	o.trust.register(cmd)
	f.StringVar(&o.binary, "binary", "", "outpost binary to install as "+service.DefaultBinary+" (default: this one)")
	f.BoolVar(&o.skipChecks, "skip-checks", false, "install even when `outpost doctor` reports failures")
	f.DurationVar(&o.timeout, "timeout", 0, "give up waiting for the service to become healthy after this long (default: the unit's start timeout)")
	return cmd
}

func requireRoot(verb string) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("outpost %s changes users, /etc and systemd: run it as root (sudo outpost %s ...)", verb, verb)
	}
	return nil
}

// install is `outpost install`: every step is idempotent.
func (g *globals) install(ctx context.Context, o installOptions) error {
	if err := requireRoot("install"); err != nil {
		return err
	}
	say := func(format string, a ...any) { fmt.Fprintf(g.streams.Err, "install: "+format+"\n", a...) }

	var bnd *installBundle
	if o.bundle != "" {
		b, err := openInstallBundle(ctx, g, &o)
		if err != nil {
			return err
		}
		defer b.cleanup()
		bnd = b
	} else if len(o.trust.pubkeys) > 0 {
		return errors.New("--pubkey needs --bundle")
	}

	l, err := o.def.load(ctx, g)
	if err != nil {
		return err
	}
	app := l.app
	prev, _ := readRecord(filepath.Join(service.ConfigRoot, app.Name))
	user := o.user
	if prev != nil {
		if user != "" && user != prev.User {
			return fmt.Errorf("%s is installed for user %s, which owns its data; keep --user %s (or uninstall --purge first)", app.Name, prev.User, prev.User)
		}
		user = prev.User
	}
	lay, err := service.LayoutFor(app.Name, user)
	if err != nil {
		return err
	}
	mgr, err := service.NewManager(lay.UnitName, g.log)
	if err != nil {
		return err
	}

	binary := o.binary
	if binary == "" {
		if binary, err = os.Executable(); err != nil {
			return fmt.Errorf("finding this binary: %w; pass --binary", err)
		}
	}
	if copied, err := service.InstallBinary(binary, service.DefaultBinary); err != nil {
		return err
	} else if copied {
		say("installed %s", service.DefaultBinary)
	}

	acct, err := service.EnsureUser(ctx, lay, g.log)
	if err != nil {
		return err
	}
	if acct.Created {
		say("created user %s (uid %d) with home %s", acct.Name, acct.UID, lay.StateDir)
	}
	if err := service.MkdirOwned(service.ConfigRoot, 0o755, 0, 0); err != nil {
		return err
	}
	if err := service.MkdirOwned(lay.ConfigDir, 0o750, 0, acct.GID); err != nil {
		return err
	}
	if err := service.MkdirOwned(service.RuntimeRoot, 0o755, 0, 0); err != nil {
		return err
	}
	// systemd's RuntimeDirectory= makes it too; the helpers below need it first.
	if err := service.MkdirOwned(lay.RuntimeDir, 0o700, acct.UID, acct.GID); err != nil {
		return err
	}
	if o.containerHost == "" {
		if err := service.PodmanUserConfig(acct); err != nil {
			return err
		}
		if made, err := service.EnsureNetnsDir(); err != nil {
			return err
		} else if made {
			say("created %s so rootless Podman's network namespace does not hide %s", service.NetnsDir, service.StateRoot)
		}
	}

	if err := g.installChecks(ctx, o, lay, acct); err != nil {
		return err
	}

	st, err := stageDefinition(ctx, o.def, l, lay, acct, o.containerHost)
	if err != nil {
		return err
	}
	if st.changed {
		say("definition copied to %s (%s)", lay.ConfigDir, strings.Join(st.files, ", "))
	}

	sec, err := secrets.Ensure(secrets.Dir(lay.StateDir, app.Name), app, &secrets.Owner{UID: acct.UID, GID: acct.GID})
	if err != nil {
		return err
	}
	if len(sec.Generated) > 0 {
		say("generated secrets %s in %s (0600)", strings.Join(sec.Generated, ", "), secrets.Dir(lay.StateDir, app.Name))
	}
	if len(sec.Kept) > 0 {
		say("kept existing secrets %s", strings.Join(sec.Kept, ", "))
	}

	helper := func(stdin io.Reader, args ...string) error {
		return service.RunAs(ctx, acct, lay.Env(o.containerHost), lay.StateDir, stdin, g.streams.Err, g.streams.Err, service.DefaultBinary, args...)
	}
	for _, img := range o.images {
		f, err := os.Open(img)
		if err != nil {
			return fmt.Errorf("opening image archive: %w", err)
		}
		say("loading %s into %s's image storage", img, acct.Name)
		err = helper(f, "service", "load-image")
		f.Close()
		if err != nil {
			return err
		}
	}
	if bnd != nil {
		keyFile, err := bnd.keyFile(lay, acct.GID)
		if err != nil {
			return err
		}
		say("loading the bundle's images into %s's image storage (present ones are skipped)", acct.Name)
		if err := bnd.loadImages(helper, keyFile); err != nil {
			return err
		}
	}
	if l.demo {
		say("building the demo image offline for %s", acct.Name)
		if err := helper(nil, "demo-image"); err != nil {
			return err
		}
	}

	hard := uint64(0)
	var rl syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl) == nil {
		hard = rl.Max
	}
	tp, err := service.Timeouts(app)
	if err != nil {
		return err
	}
	text, err := service.Render(service.Unit{
		Layout: lay, Version: app.Version, Group: groupName(acct), Args: st.args,
		ContainerHost: o.containerHost, Timeouts: tp, LimitNOFILE: service.HardNoFile(app, hard),
	})
	if err != nil {
		return err
	}
	before, _ := mgr.Show(ctx)
	unitChanged, err := mgr.Install(ctx, lay.UnitPath(), text)
	if err != nil {
		return err
	}
	if unitChanged {
		say("unit %s written", lay.UnitPath())
	}
	rec := installRecord{Layout: lay, UID: acct.UID, GID: acct.GID, ContainerHost: o.containerHost, Args: st.args,
		Demo: l.demo, OutpostVer: Version, InstalledAt: time.Now().UTC()}
	if prev != nil && !unitChanged && !st.changed && prev.OutpostVer == Version {
		rec.InstalledAt = prev.InstalledAt
	}
	if err := writeRecord(rec); err != nil {
		return err
	}

	wctx := ctx
	if o.timeout > 0 {
		var cancel context.CancelFunc
		wctx, cancel = context.WithTimeout(ctx, o.timeout)
		defer cancel()
	}
	switch {
	case before.ActiveState == "active" && unitChanged:
		say("restarting %s for the new unit (waits until every service is healthy; up to %s)", mgr.Unit(), tp.Start.Round(time.Second))
		err = mgr.Restart(wctx)
	case before.ActiveState == "active" && st.changed:
		say("applying the changed definition through the running daemon")
		err = g.applyInstalled(wctx, lay, st.app)
	case before.ActiveState == "active":
		say("nothing changed; %s is running", mgr.Unit())
	default:
		say("starting %s (waits until every service is healthy; up to %s)", mgr.Unit(), tp.Start.Round(time.Second))
		err = mgr.Start(wctx)
	}
	if err != nil {
		return err
	}
	rep, err := installedStatus(ctx, lay)
	if err != nil {
		return fmt.Errorf("%s started, but its status is unavailable: %w (see `systemctl status %s`)", mgr.Unit(), err, mgr.Unit())
	}
	fmt.Fprintf(g.streams.Out, "%s is installed and healthy: unit %s, user %s, revision %d\n", app.Name, mgr.Unit(), acct.Name, rep.Revision)
	printStatus(g, rep.Services)
	fmt.Fprintf(g.streams.Out, "\nstate %s · config %s · logs: journalctl -u %s · manage: outpost start|stop|restart, outpost service status\n",
		lay.StateDir, lay.ConfigDir, mgr.Unit())
	return nil
}

// installChecks runs `outpost doctor`'s checks for the service user, unless
// an existing Podman socket is used (this host's Podman then does not
// matter) or --skip-checks.
func (g *globals) installChecks(ctx context.Context, o installOptions, lay service.Layout, acct service.Account) error {
	if o.containerHost != "" {
		fmt.Fprintf(g.streams.Err, "install: host checks skipped: using the existing Podman socket %s\n", o.containerHost)
		return nil
	}
	env := map[string]string{"HOME": acct.Home, "USER": acct.Name, "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	for _, kv := range lay.Env("") {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	rep := doctor.Run(ctx, doctor.Options{
		User:   &doctor.User{UID: acct.UID, GIDs: []int{acct.GID}, Name: acct.Name},
		Home:   acct.Home,
		Getenv: func(k string) string { return env[k] },
		Run: func(ctx context.Context, name string, args ...string) ([]byte, error) {
			var out strings.Builder
			var errb strings.Builder
			err := service.RunAs(ctx, acct, lay.Env(""), acct.Home, nil, &out, &errb, name, args...)
			if err != nil {
				return []byte(out.String()), fmt.Errorf("%w: %s", err, strings.TrimSpace(errb.String()))
			}
			return []byte(out.String()), nil
		},
		Logger: g.log,
	})
	if rep.OK() {
		return nil
	}
	tw := tabwriter.NewWriter(g.streams.Err, 0, 4, 2, ' ', 0)
	for _, c := range rep.Checks {
		if c.Status == doctor.StatusPass {
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", c.Status, c.Name, c.Detail)
		if c.Fix != "" {
			fmt.Fprintf(tw, "\t\tfix: %s\n", c.Fix)
		}
	}
	tw.Flush()
	if o.skipChecks {
		fmt.Fprintln(g.streams.Err, "install: continuing despite the failures above (--skip-checks)")
		return nil
	}
	return fmt.Errorf("the host is not ready for rootless Podman as %s; apply the fixes above and run install again (or --skip-checks)", acct.Name)
}

func groupName(acct service.Account) string {
	if g, err := lookupGroupName(acct.GID); err == nil {
		return g
	}
	return acct.Name
}

// applyInstalled sends the copied definition to the running daemon, which
// recreates only what changed.
func (g *globals) applyInstalled(ctx context.Context, lay service.Layout, app *model.Appliance) error {
	c, err := daemon.Dial(lay.SocketPath())
	if err != nil {
		return fmt.Errorf("reaching the daemon at %s: %w; try `outpost restart --name %s`", lay.SocketPath(), err, lay.Appliance)
	}
	_, err = c.Up(ctx, app, 0, progressPrinter(g.streams.Err))
	return err
}

// installedStatus asks the installed daemon for its status.
func installedStatus(ctx context.Context, lay service.Layout) (*daemon.StatusReply, error) {
	c, err := daemon.Dial(lay.SocketPath())
	if err != nil {
		return nil, fmt.Errorf("reaching the daemon at %s: %w", lay.SocketPath(), err)
	}
	return c.Status(ctx)
}

func readRecord(configDir string) (*installRecord, error) {
	data, err := os.ReadFile(filepath.Join(configDir, recordFile))
	if err != nil {
		return nil, err
	}
	var r installRecord
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("reading %s: %w", filepath.Join(configDir, recordFile), err)
	}
	return &r, nil
}

func writeRecord(r installRecord) error {
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	_, err = service.WriteFileOwned(filepath.Join(r.ConfigDir, recordFile), append(data, '\n'), 0o640, 0, r.GID)
	return err
}

// installed resolves the installed appliance a service command acts on: the
// one named, or the only one.
func installed(name string) (*installRecord, error) {
	if name != "" {
		r, err := readRecord(filepath.Join(service.ConfigRoot, name))
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil, fmt.Errorf("appliance %q is not installed here (no %s); install it with `outpost install`", name, filepath.Join(service.ConfigRoot, name, recordFile))
			}
			return nil, err
		}
		return r, nil
	}
	matches, _ := filepath.Glob(filepath.Join(service.ConfigRoot, "*", recordFile))
	sort.Strings(matches)
	switch len(matches) {
	case 0:
		return nil, errors.New("no appliance is installed here; install one with `outpost install`")
	case 1:
		return readRecord(filepath.Dir(matches[0]))
	}
	var names []string
	for _, m := range matches {
		names = append(names, filepath.Base(filepath.Dir(m)))
	}
	return nil, fmt.Errorf("several appliances are installed here (%s); choose one with --name", strings.Join(names, ", "))
}

func newServiceActionCmd(g *globals, verb string) *cobra.Command {
	var name string
	short := map[string]string{
		"start":   "Start the installed appliance's service and wait until it is healthy",
		"stop":    "Stop the installed appliance's service (containers stop in reverse dependency order)",
		"restart": "Restart the installed appliance's service and wait until it is healthy",
	}[verb]
	cmd := &cobra.Command{
		Use:   verb,
		Short: short,
		Long: short + `.
Maps onto systemctl ` + verb + ` outpost-<name>.service; needs root (or polkit).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			rec, err := installed(name)
			if err != nil {
				return err
			}
			mgr, err := service.NewManager(rec.UnitName, g.log)
			if err != nil {
				return err
			}
			switch verb {
			case "start":
				err = mgr.Start(ctx)
			case "stop":
				err = mgr.Stop(ctx)
			default:
				err = mgr.Restart(ctx)
			}
			if err != nil {
				return err
			}
			st, err := mgr.Show(ctx)
			if err != nil {
				return err
			}
			fmt.Fprintf(g.streams.Out, "%s: %s (%s)", mgr.Unit(), st.ActiveState, st.SubState)
			if st.StatusText != "" {
				fmt.Fprintf(g.streams.Out, " — %s", st.StatusText)
			}
			fmt.Fprintln(g.streams.Out)
			return nil
		},
	}
	cmd.Flags().StringVarP(&name, "name", "n", "", "installed appliance (default: the only one)")
	return cmd
}

func newServiceCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "service",
		Short: "The installed appliance's system service: status, start, stop, restart",
		Long: `Commands for an appliance installed with ` + "`outpost install`" + `. ` + "`outpost start|stop|restart`" + `
are the same as ` + "`outpost service start|stop|restart`" + `; ` + "`outpost service status`" + ` shows
systemd's view of the unit together with the appliance's status, while
` + "`outpost status`" + ` shows the appliance alone.`,
	}
	for _, verb := range []string{"start", "stop", "restart"} {
		cmd.AddCommand(newServiceActionCmd(g, verb))
	}
	cmd.AddCommand(newServiceStatusCmd(g), newLoadImageCmd(g), newPurgeVolumesCmd(g))
	return cmd
}

func newServiceStatusCmd(g *globals) *cobra.Command {
	var name string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the unit's state (systemd) and the appliance's services",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			rec, err := installed(name)
			if err != nil {
				return err
			}
			mgr, err := service.NewManager(rec.UnitName, g.log)
			if err != nil {
				return err
			}
			st, err := mgr.Show(ctx)
			if err != nil {
				return err
			}
			var app *daemon.StatusReply
			if st.ActiveState == "active" || st.ActiveState == "reloading" {
				app, _ = installedStatus(ctx, rec.Layout)
			}
			if asJSON {
				return printJSON(g.streams.Out, struct {
					Service   service.State       `json:"service"`
					Install   *installRecord      `json:"install"`
					Appliance *daemon.StatusReply `json:"appliance,omitempty"`
				}{st, rec, app})
			}
			tw := tabwriter.NewWriter(g.streams.Out, 0, 4, 2, ' ', 0)
			fmt.Fprintf(tw, "unit\t%s (%s, %s)\n", mgr.Unit(), st.LoadState, st.UnitFileState)
			fmt.Fprintf(tw, "state\t%s (%s)\n", st.ActiveState, st.SubState)
			if st.StatusText != "" {
				fmt.Fprintf(tw, "status\t%s\n", st.StatusText)
			}
			if !st.ActiveSince.IsZero() {
				fmt.Fprintf(tw, "since\t%s\n", st.ActiveSince.Format(time.RFC3339))
			}
			fmt.Fprintf(tw, "main pid\t%d\n", st.MainPID)
			fmt.Fprintf(tw, "restarts\t%d\n", st.NRestarts)
			fmt.Fprintf(tw, "user\t%s\n", rec.User)
			fmt.Fprintf(tw, "state dir\t%s\n", rec.StateDir)
			fmt.Fprintf(tw, "config dir\t%s\n", rec.ConfigDir)
			fmt.Fprintf(tw, "logs\tjournalctl -u %s\n", mgr.Unit())
			tw.Flush()
			if app != nil {
				fmt.Fprintf(g.streams.Out, "\n%s %s (revision %d, daemon pid %d)\n", app.Appliance, app.Version, app.Revision, app.PID)
				printStatus(g, app.Services)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&name, "name", "n", "", "installed appliance (default: the only one)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// newLoadImageCmd is the helper install runs as the service user to load an
// image archive (on stdin) into that user's Podman storage.
func newLoadImageCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:    "load-image",
		Short:  "Load an image archive from standard input into Podman (used by install)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			env, err := g.openEnv(cmd.Context())
			if err != nil {
				return err
			}
			defer env.Close()
			names, err := env.Engine.LoadImage(cmd.Context(), bufio.NewReaderSize(g.streams.In, 1<<20))
			if err != nil {
				return fmt.Errorf("loading image archive: %w", err)
			}
			fmt.Fprintf(g.streams.Err, "loaded %s\n", strings.Join(names, ", "))
			return nil
		},
	}
}

// volumeRemover is implemented by engines that can delete volumes; it is
// deliberately not part of engine.Engine (see engine/podman.RemoveVolume).
type volumeRemover interface {
	RemoveVolume(ctx context.Context, name string) error
}

// newPurgeVolumesCmd is the helper `uninstall --purge` runs as the service
// user: it deletes the appliance's volumes and records each removal.
func newPurgeVolumesCmd(g *globals) *cobra.Command {
	var name, confirm string
	cmd := &cobra.Command{
		Use:    "purge-volumes",
		Short:  "Delete every volume of an appliance (used by uninstall --purge)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if name == "" || confirm != name {
				return fmt.Errorf("refusing to delete volumes without --name NAME --yes-delete-data=NAME")
			}
			env, err := g.openEnv(ctx)
			if err != nil {
				return err
			}
			defer env.Close()
			rm, ok := env.Engine.(volumeRemover)
			if !ok {
				return errors.New("this container engine cannot delete volumes")
			}
			recorded, err := env.Store.Volumes(ctx, name)
			if err != nil {
				return err
			}
			targets := map[string]bool{}
			for _, v := range recorded {
				if !v.External {
					targets[v.Name] = true
				}
			}
			labelled, err := env.Engine.ListVolumes(ctx, map[string]string{engine.LabelAppliance: name})
			if err != nil {
				return err
			}
			for _, v := range labelled {
				targets[v.Name] = true
			}
			var names []string
			for n := range targets {
				names = append(names, n)
			}
			sort.Strings(names)
			for _, v := range names {
				if err := rm.RemoveVolume(ctx, v); err != nil && !errors.Is(err, engine.ErrNotFound) {
					return fmt.Errorf("deleting volume %s: %w (is a container still using it? `outpost down --name %s` first)", v, err, name)
				}
				if err := env.Store.RecordVolumeRemoved(ctx, name, v, "outpost uninstall --purge", "purge confirmed by the operator"); err != nil && !errors.Is(err, store.ErrNotFound) {
					env.Log.Warn("recording volume removal failed", "volume", v, "err", err)
				}
				env.Log.Warn("volume deleted", "appliance", name, "volume", v)
				fmt.Fprintf(g.streams.Err, "deleted volume %s\n", v)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&name, "name", "n", "", "appliance")
	cmd.Flags().StringVar(&confirm, "yes-delete-data", "", "the appliance name again, to confirm")
	return cmd
}

func newUninstallCmd(g *globals) *cobra.Command {
	var name, confirm string
	var purge bool
	cmd := &cobra.Command{
		Use:   "uninstall",
		Short: "Stop and remove the appliance's service and containers; data is kept unless --purge",
		Long: `Stop the service (containers stop in reverse dependency order), remove the
appliance's containers and networks, then disable and remove the unit.
Volumes, the state directory (database, secrets, Podman storage), the copied
definition and the service user are kept: ` + "`outpost install`" + ` brings the
appliance back with its data and the same secrets.

--purge additionally deletes the volumes, the state and config directories
and the service user. It asks for the appliance name to be typed; without a
terminal it refuses unless --yes-delete-data=NAME names the appliance.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.uninstall(cmd.Context(), name, purge, confirm)
		},
	}
	cmd.Flags().StringVarP(&name, "name", "n", "", "installed appliance (default: the only one)")
	cmd.Flags().BoolVar(&purge, "purge", false, "also delete volumes, state, secrets, config and the service user (asks for confirmation)")
	cmd.Flags().StringVar(&confirm, "yes-delete-data", "", "confirm --purge without a terminal by giving the appliance name")
	return cmd
}

func (g *globals) uninstall(ctx context.Context, name string, purge bool, confirm string) error {
	if err := requireRoot("uninstall"); err != nil {
		return err
	}
	say := func(format string, a ...any) { fmt.Fprintf(g.streams.Err, "uninstall: "+format+"\n", a...) }
	rec, err := installed(name)
	if err != nil {
		return err
	}
	if purge {
		if err := confirmPurge(g.streams, rec.Appliance, confirm); err != nil {
			return err
		}
	}
	mgr, err := service.NewManager(rec.UnitName, g.log)
	if err != nil {
		return err
	}
	st, err := mgr.Show(ctx)
	if err != nil {
		return err
	}
	if st.Installed() && st.ActiveState != "inactive" && st.ActiveState != "failed" {
		say("stopping %s (containers stop in reverse dependency order)", mgr.Unit())
		if err := mgr.Stop(ctx); err != nil {
			return err
		}
	}
	acct, err := service.LookupAccount(rec.User)
	if err != nil {
		return fmt.Errorf("looking up the service user %s: %w", rec.User, err)
	}
	acct.Home = rec.StateDir
	if err := service.MkdirOwned(rec.RuntimeDir, 0o700, acct.UID, acct.GID); err != nil {
		return err
	}
	helper := func(args ...string) error {
		return service.RunAs(ctx, acct, rec.Env(rec.ContainerHost), rec.StateDir, nil, g.streams.Err, g.streams.Err, service.DefaultBinary, args...)
	}
	say("removing the containers and networks of %s", rec.Appliance)
	if err := helper("down", "--name", rec.Appliance); err != nil && !purge {
		return fmt.Errorf("%w; the unit is stopped but still installed — fix the error and run uninstall again", err)
	} else if err != nil {
		say("warning: %v", err)
	}
	if purge {
		if err := helper("service", "purge-volumes", "--name", rec.Appliance, "--yes-delete-data", rec.Appliance); err != nil {
			return fmt.Errorf("%w; nothing else was deleted — fix the error and run uninstall --purge again", err)
		}
	}
	if err := mgr.Uninstall(ctx, rec.UnitPath()); err != nil {
		return err
	}
	say("removed unit %s", rec.UnitPath())
	if !purge {
		fmt.Fprintf(g.streams.Out, "%s is uninstalled; kept: volumes, %s (database, secrets, images), %s, user %s.\n"+
			"Reinstall with `outpost install -f %s/...`, or delete everything with `outpost uninstall --purge --name %s`.\n",
			rec.Appliance, rec.StateDir, rec.ConfigDir, rec.User, rec.ConfigDir, rec.Appliance)
		return nil
	}
	if n, err := service.KillUserProcesses(acct.UID); err != nil {
		return err
	} else if n > 0 {
		say("stopped %d leftover processes of %s", n, acct.Name)
	}
	for _, d := range []string{rec.StateDir, rec.ConfigDir, rec.RuntimeDir} {
		if err := os.RemoveAll(d); err != nil {
			return fmt.Errorf("deleting %s: %w", d, err)
		}
		say("deleted %s", d)
	}
	if err := service.DeleteUser(ctx, acct.Name); err != nil {
		return err
	}
	say("deleted user %s", acct.Name)
	fmt.Fprintf(g.streams.Out, "%s is purged: its volumes, state, secrets, configuration and user are deleted.\n", rec.Appliance)
	return nil
}

// confirmPurge demands the appliance name: typed at a terminal, or given
// with --yes-delete-data in a non-interactive run.
func confirmPurge(s Streams, name, flag string) error {
	if flag != "" {
		if flag != name {
			return fmt.Errorf("--yes-delete-data=%s does not name the appliance %s; nothing was changed", flag, name)
		}
		return nil
	}
	f, ok := s.In.(*os.File)
	if !ok || !isTerminal(f) {
		return fmt.Errorf("refusing to purge %s without a typed confirmation; in a non-interactive run pass --yes-delete-data=%s", name, name)
	}
	fmt.Fprintf(s.Err, "This deletes the volumes, state, secrets, configuration and user of %s. It cannot be undone.\nType the appliance name (%s) to confirm: ", name, name)
	line, err := bufio.NewReader(f).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("reading confirmation: %w", err)
	}
	if strings.TrimSpace(line) != name {
		return errors.New("confirmation did not match; nothing was changed")
	}
	return nil
}

func isTerminal(f *os.File) bool { return isTerminalFD(f.Fd()) }
