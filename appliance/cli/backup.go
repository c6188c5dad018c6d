package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/outpostdev/outpost/appliance/backup"
	"github.com/outpostdev/outpost/appliance/daemon"
	"github.com/outpostdev/outpost/appliance/model"
	"github.com/outpostdev/outpost/appliance/store"
)

// backupCommands are `backup`, `backups` (with `prune`), `restore`, and the
// hidden helper run inside helper containers.
func backupCommands(g *globals) []*cobra.Command {
	return []*cobra.Command{newBackupCmd(g), newBackupsCmd(g), newRestoreCmd(g), newBackupHelperCmd(g)}
}

func newBackupCmd(g *globals) *cobra.Command {
	var def defOptions
	var to, quiesce string
	var noVerify, asJSON bool
	cmd := &cobra.Command{
		Use:   "backup",
		Short: "Take a consistent snapshot of the appliance's data",
		Long: `Write one snapshot of the deployed appliance: each backup hook's output
(e.g. pg_dumpall run in the database container), every named volume's
contents (services without a hook that write to a volume are paused, or
stopped where pausing is impossible, for its copy), the recorded definition,
revision and image digests, the secrets and the proxy's CA and certificates,
and a manifest with the sha256 of every file, written last. The snapshot is
read back against its manifest unless --no-verify. Snapshots go to the state
directory's backups/ unless --to is given. Goes through the daemon when one
runs, so supervision does not restart a service stopped for the copy.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if to != "" {
				abs, err := filepath.Abs(to)
				if err != nil {
					return err
				}
				to = abs
			}
			view := newProgressView(g.streams.Err)
			defer view.close()
			var res *backup.Result
			name, err := def.applianceName(ctx, g)
			if err != nil {
				return err
			}
			if c := g.client(); c != nil {
				res, err = c.Backup(ctx, daemon.BackupRequest{Appliance: name, Dir: to, Quiesce: quiesce, SkipVerify: noVerify, OutpostVersion: Version}, view.event)
			} else {
				env, err2 := g.openEnv(ctx)
				if err2 != nil {
					return err2
				}
				defer env.Close()
				app, err2 := def.deployed(ctx, g, env)
				if err2 != nil {
					return err2
				}
				mgr := backup.New(env.Engine, env.Store, env.Runtime, g.log)
				res, err = mgr.Backup(ctx, backup.Options{Appliance: app.Name, StateDir: env.Paths.StateDir, Dir: to, Quiesce: quiesce,
					SkipVerify: noVerify, OutpostVersion: Version, Progress: view.event})
			}
			view.close()
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(g.streams.Out, res)
			}
			verified := "verified"
			if !res.Verified {
				verified = "not verified"
			}
			fmt.Fprintf(g.streams.Out, "snapshot %s\n  %s in %d files, revision %d, %s, %s\n", res.Path, humanBytes(res.Size), res.Files, res.Revision, verified, res.Duration.Round(100*time.Millisecond))
			for _, w := range res.Warnings {
				fmt.Fprintln(g.streams.Out, "  warning:", w)
			}
			return nil
		},
	}
	def.register(cmd.Flags())
	cmd.Flags().StringVar(&to, "to", "", "directory to write the snapshot into (default <state-dir>/backups)")
	cmd.Flags().StringVar(&quiesce, "quiesce", "", "how services without a backup hook are held for their volumes' copy: auto (pause, else stop), pause, stop, none (default: x-outpost.backup.quiesce, else auto)")
	cmd.Flags().BoolVar(&noVerify, "no-verify", false, "do not read the snapshot back against its manifest")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	return cmd
}

// applianceName is the appliance named by --name or by the -f files; empty
// when neither is given (the only deployed one is then used).
func (o *defOptions) applianceName(ctx context.Context, g *globals) (string, error) {
	if o.name != "" || !o.given() {
		return o.name, nil
	}
	l, err := o.load(ctx, g)
	if err != nil {
		return "", err
	}
	return l.app.Name, nil
}

// storeOnly opens just the state database: listing and pruning snapshots
// need no container engine.
func (g *globals) storeOnly(ctx context.Context) (*store.Store, daemon.Paths, error) {
	p, err := g.paths()
	if err != nil {
		return nil, p, err
	}
	st, err := store.Open(ctx, p.DBPath(), store.WithLogger(g.log))
	return st, p, err
}

func newBackupsCmd(g *globals) *cobra.Command {
	var name string
	var dirs []string
	var all, verify, asJSON bool
	cmd := &cobra.Command{
		Use:   "backups",
		Short: "List snapshots: time, revision, size, when last verified",
		Long: `List the complete snapshots in the state directory's backups/, in the
directories snapshots were written to with --to, and in --dir directories,
newest first. A snapshot is complete once its manifest is written; --all also
lists interrupted ones. --verify checks every file of each snapshot against
its manifest now and records the result.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			st, paths, err := g.storeOnly(ctx)
			if err != nil {
				return err
			}
			defer st.Close()
			mgr := backup.New(nil, st, nil, g.log)
			opts := backup.ListOptions{Appliance: name, StateDir: paths.StateDir, Dirs: dirs, Incomplete: all}
			snaps, err := mgr.List(ctx, opts)
			if err != nil {
				return err
			}
			var failed int
			if verify {
				for i, s := range snaps {
					if !s.Complete {
						continue
					}
					if _, err := mgr.Verify(ctx, s.Path, nil); err != nil {
						failed++
						snaps[i].Problem = err.Error()
						continue
					}
					snaps[i].VerifiedAt = time.Now().UTC()
				}
			}
			if asJSON {
				if snaps == nil {
					snaps = []backup.Snapshot{}
				}
				if err := printJSON(g.streams.Out, snaps); err != nil {
					return err
				}
			} else {
				printSnapshots(g.streams.Out, snaps)
			}
			if failed > 0 {
				return &exitCodeError{code: 1, msg: fmt.Sprintf("%d snapshots failed verification", failed)}
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&name, "name", "n", "", "only this appliance's snapshots")
	cmd.Flags().StringArrayVar(&dirs, "dir", nil, "also look in this directory (repeatable)")
	cmd.Flags().BoolVar(&all, "all", false, "also list interrupted (incomplete) snapshots")
	cmd.Flags().BoolVar(&verify, "verify", false, "verify every snapshot's files against its manifest now")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.AddCommand(newPruneCmd(g))
	return cmd
}

func printSnapshots(w io.Writer, snaps []backup.Snapshot) {
	if len(snaps) == 0 {
		fmt.Fprintln(w, "no snapshots (take one with `outpost backup`)")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tCREATED\tREVISION\tSIZE\tVERIFIED\tTRIGGER\tPATH")
	for _, s := range snaps {
		if !s.Complete {
			fmt.Fprintf(tw, "%s\t%s\t-\t-\tINCOMPLETE\t-\t%s\n", s.Name, s.CreatedAt.Local().Format(time.DateTime), s.Path)
			continue
		}
		verified := "never"
		switch {
		case s.Problem != "":
			verified = "FAILED"
		case !s.VerifiedAt.IsZero():
			verified = s.VerifiedAt.Local().Format(time.DateTime)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\n", s.Name, s.CreatedAt.Local().Format(time.DateTime), s.Revision, humanBytes(s.Size), verified, s.Trigger, s.Path)
	}
	tw.Flush()
	for _, s := range snaps {
		if s.Problem != "" && s.Complete {
			fmt.Fprintf(w, "%s: %s\n", s.Name, s.Problem)
		}
	}
}

func newPruneCmd(g *globals) *cobra.Command {
	var name, keepWithin string
	var dirs []string
	var keepLast int
	var dryRun, asJSON bool
	cmd := &cobra.Command{
		Use:   "prune",
		Short: "Remove the snapshots the retention rule does not keep",
		Long: `Remove complete snapshots of one appliance that neither --keep-last N (the N
newest) nor --keep-within AGE (younger than AGE: 36h, 14d, 2w) keeps; the
newest snapshot is always kept. Without flags, the appliance's
x-outpost.backup keep_last/keep_within apply. Only directories with a valid
Outpost manifest are removed; interrupted snapshots are removed too when no
backup is running.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			st, paths, err := g.storeOnly(ctx)
			if err != nil {
				return err
			}
			defer st.Close()
			if name == "" {
				names, err := st.Appliances(ctx)
				if err != nil {
					return err
				}
				if len(names) != 1 {
					return errors.New("name the appliance whose snapshots to prune with --name")
				}
				name = names[0]
			}
			ret := backup.Retention{KeepLast: keepLast}
			if keepWithin != "" {
				if ret.KeepWithin, err = model.ParseAge(keepWithin); err != nil {
					return fmt.Errorf("--keep-within: %w", err)
				}
			}
			if ret.Empty() {
				if p := deployedPolicy(ctx, st, name); p != nil {
					ret = backup.PolicyRetention(p)
					if p.Dir != "" {
						dirs = append(dirs, p.Dir)
					}
				}
			}
			mgr := backup.New(nil, st, nil, g.log)
			res, err := mgr.Prune(ctx, backup.PruneOptions{Appliance: name, StateDir: paths.StateDir, Dirs: dirs, Retention: ret, DryRun: dryRun})
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(g.streams.Out, res)
			}
			verb := "removed"
			if dryRun {
				verb = "would remove"
			}
			for _, s := range res.Removed {
				fmt.Fprintf(g.streams.Out, "%s %s (%s, %s)\n", verb, s.Path, s.CreatedAt.Local().Format(time.DateTime), humanBytes(s.Size))
			}
			for _, p := range res.Partials {
				fmt.Fprintf(g.streams.Out, "removed interrupted %s\n", p)
			}
			fmt.Fprintf(g.streams.Out, "%d snapshots kept, %d %s\n", len(res.Kept), len(res.Removed), verb)
			return nil
		},
	}
	cmd.Flags().StringVarP(&name, "name", "n", "", "appliance whose snapshots to prune (default: the only deployed one)")
	cmd.Flags().IntVar(&keepLast, "keep-last", 0, "keep the N newest snapshots")
	cmd.Flags().StringVar(&keepWithin, "keep-within", "", "keep snapshots younger than this (36h, 14d, 2w)")
	cmd.Flags().StringArrayVar(&dirs, "dir", nil, "also look in this directory (repeatable)")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "only say what would be removed")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// deployedPolicy reads x-outpost.backup of the appliance's active revision.
func deployedPolicy(ctx context.Context, st *store.Store, name string) *model.BackupPolicy {
	rev, err := st.ActiveRevision(ctx, name)
	if err != nil {
		return nil
	}
	var app model.Appliance
	if json.Unmarshal(rev.Spec, &app) != nil {
		return nil
	}
	return app.Backup
}

func newRestoreCmd(g *globals) *cobra.Command {
	var stop, asJSON bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "restore SNAPSHOT",
		Short: "Restore the appliance from a snapshot and bring it up healthy",
		Long: `Restore the appliance a snapshot (a path, or a name from ` + "`outpost backups`" + `)
holds. Before changing anything it verifies every file against the manifest
and checks every image is in local storage; it refuses while the appliance
runs unless --stop. Then it refills each volume (owners and modes as they
were), reloads the output of backup hooks that have a restore command
(e.g. psql) into their freshly initialised service, puts the secrets and the
proxy's CA back, and starts the recorded definition health-gated. It works
on a fresh state directory with only the snapshot and the images.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			st, paths, err := g.storeOnly(ctx)
			if err != nil {
				return err
			}
			path, err := backup.New(nil, st, nil, g.log).Resolve(ctx, args[0], backup.ListOptions{StateDir: paths.StateDir})
			st.Close()
			if err != nil {
				return err
			}
			view := newProgressView(g.streams.Err)
			defer view.close()
			up := func(svc, msg string) { view.line(svc, msg) }
			var res *backup.RestoreResult
			if c := g.client(); c != nil {
				res, err = c.Restore(ctx, daemon.RestoreRequest{Snapshot: path, Stop: stop, Timeout: timeout}, view.event, up)
			} else {
				env, err2 := g.openEnv(ctx)
				if err2 != nil {
					return err2
				}
				defer env.Close()
				res, err = backup.New(env.Engine, env.Store, env.Runtime, g.log).Restore(ctx, backup.RestoreOptions{
					Snapshot: path, StateDir: env.Paths.StateDir, StopRunning: stop, Timeout: timeout, Progress: view.event, UpProgress: up,
				})
			}
			view.close()
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(g.streams.Out, res)
			}
			fmt.Fprintf(g.streams.Out, "%s restored from %s (snapshot revision %d) as revision %d in %s\n",
				res.Appliance, res.Snapshot, res.SnapshotRevision, res.Revision, res.Duration.Round(100*time.Millisecond))
			for _, w := range res.Warnings {
				fmt.Fprintln(g.streams.Out, "  warning:", w)
			}
			printStatus(g, res.Services)
			return nil
		},
	}
	cmd.Flags().BoolVar(&stop, "stop", false, "stop the appliance first if it runs (otherwise restore refuses)")
	cmd.Flags().DurationVar(&timeout, "timeout", 0, "give up if not healthy within this time after restoring")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	return cmd
}

func newBackupHelperCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:                backup.HelperCommand + " VERB [ARGS...]",
		Short:              "Copy volume contents inside a helper container (used by backup and restore)",
		Hidden:             true,
		DisableFlagParsing: true,
		Args:               cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return backup.RunHelper(cmd.Context(), args, g.streams.In, g.streams.Out, g.streams.Err)
		},
	}
}

// progressView shows backup and restore progress: a byte progress bar per
// streamed step on a terminal, one line per step otherwise.
type progressView struct {
	mu  sync.Mutex
	w   io.Writer
	tty bool
	bar *progressbar.ProgressBar
	key string
}

func newProgressView(w io.Writer) *progressView {
	tty := false
	if f, ok := w.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			tty = true
		}
	}
	return &progressView{w: w, tty: tty}
}

func (v *progressView) event(e backup.Event) {
	v.mu.Lock()
	defer v.mu.Unlock()
	key := e.Step + " " + e.Item
	label := e.Item
	if label == "" {
		label = e.Step
	}
	switch {
	case e.Done:
		v.finishBar()
		msg := "done"
		if e.Bytes > 0 {
			msg = "done, " + humanBytes(e.Bytes)
		}
		if e.Message != "" {
			msg = e.Message
		}
		fmt.Fprintf(v.w, "%-14s %s: %s\n", label, e.Step, msg)
	case e.Message != "":
		v.finishBar()
		fmt.Fprintf(v.w, "%-14s %s\n", label, e.Message)
	case e.Bytes > 0 && v.tty:
		if v.bar == nil || v.key != key {
			v.finishBar()
			max := e.Total
			if max <= 0 {
				max = -1
			}
			v.bar = progressbar.NewOptions64(max, progressbar.OptionSetWriter(v.w), progressbar.OptionShowBytes(true), progressbar.OptionShowTotalBytes(true),
				progressbar.OptionSetDescription(fmt.Sprintf("%-14s %s", label, e.Step)), progressbar.OptionClearOnFinish(),
				progressbar.OptionThrottle(100*time.Millisecond), progressbar.OptionSetWidth(30))
			v.key = key
		}
		if max := v.bar.GetMax64(); max > 0 && e.Bytes > max {
			// The total was an estimate.
			v.bar.ChangeMax64(e.Bytes)
		}
		_ = v.bar.Set64(e.Bytes)
	}
}

// line prints a plain progress line (a service's start progress).
func (v *progressView) line(item, msg string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.finishBar()
	fmt.Fprintf(v.w, "%-14s %s\n", item, msg)
}

func (v *progressView) finishBar() {
	if v.bar != nil {
		_ = v.bar.Finish()
		v.bar, v.key = nil, ""
	}
}

func (v *progressView) close() {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.finishBar()
}

// humanBytes formats a size with decimal units, e.g. "12.3 MB".
func humanBytes(n int64) string {
	const unit = 1000
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %cB", float64(n)/float64(div), "kMGTPE"[exp])
}
