package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/outpostdev/outpost/appliance/daemon"
	"github.com/outpostdev/outpost/appliance/model"
	"github.com/outpostdev/outpost/appliance/store"
	"github.com/outpostdev/outpost/appliance/upgrade"
	"github.com/outpostdev/outpost/appliance/volumes"
)

// volumeCommands are `volumes` (with `prune` and `migrate`) and the hidden
// copy tool run inside helper containers.
func volumeCommands(g *globals) []*cobra.Command {
	return []*cobra.Command{newVolumesCmd(g), newVolumeCopyCmd()}
}

func newVolumesCmd(g *globals) *cobra.Command {
	var name string
	var asJSON, removed bool
	cmd := &cobra.Command{
		Use:   "volumes",
		Short: "List the appliances' volumes: owner, size, legacy status, migrations",
		Long: `List every volume in Outpost's inventory: the appliance and services that
own it, its size (as Podman measures it), whether it is legacy (no longer
mounted since a revision, kept for rollback) and whether a verified
migration copied it elsewhere. Legacy volumes are removed only by
` + "`outpost volumes prune --legacy`" + `.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			env, err := g.openEnvFor(ctx, !removed)
			if err != nil {
				return err
			}
			defer env.Close()
			var apps []string
			if name != "" {
				apps = []string{name}
			}
			if removed {
				return printRemovals(ctx, g, env, apps, asJSON)
			}
			infos, err := volumes.List(ctx, env.Engine, env.Store, apps...)
			if err != nil {
				return err
			}
			if asJSON {
				if infos == nil {
					infos = []volumes.Info{}
				}
				return printJSON(g.streams.Out, infos)
			}
			printVolumes(g.streams.Out, infos)
			return nil
		},
	}
	cmd.Flags().StringVarP(&name, "name", "n", "", "only this appliance's volumes")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().BoolVar(&removed, "removed", false, "list removed volumes instead: when, by whom, why")
	cmd.AddCommand(newVolumesPruneCmd(g), newVolumesMigrateCmd(g), newVolumesMarkLegacyCmd(g))
	return cmd
}

// printRemovals lists the removal audit of the appliances.
func printRemovals(ctx context.Context, g *globals, env *daemon.Env, apps []string, asJSON bool) error {
	if len(apps) == 0 {
		names, err := env.Store.Appliances(ctx)
		if err != nil {
			return err
		}
		apps = names
	}
	all := []store.VolumeRemoval{}
	for _, a := range apps {
		rs, err := env.Store.VolumeRemovals(ctx, a)
		if err != nil {
			return err
		}
		all = append(all, rs...)
	}
	if asJSON {
		return printJSON(g.streams.Out, all)
	}
	if len(all) == 0 {
		fmt.Fprintln(g.streams.Out, "no volume was removed")
		return nil
	}
	tw := tabwriter.NewWriter(g.streams.Out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "APPLIANCE\tVOLUME\tREMOVED\tBY\tREASON")
	for _, r := range all {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Appliance, r.Name, r.RemovedAt.Local().Format(time.DateTime), r.RemovedBy, r.Reason)
	}
	return tw.Flush()
}

func newVolumesMarkLegacyCmd(g *globals) *cobra.Command {
	var name string
	cmd := &cobra.Command{
		Use:   "mark-legacy VOLUME...",
		Short: "Mark volumes the active revision no longer mounts as legacy",
		Long: `Mark inventoried volumes as legacy, since now, at the active revision.
Upgrades do this themselves for every volume the new revision stops mounting;
this is for volumes no upgrade marked (left by ` + "`up`" + ` with a changed definition,
or by a release before legacy marks existed). A volume the active revision
mounts, or an external one, is refused. Marking removes nothing: see
` + "`outpost volumes prune --legacy`" + `.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			env, app, err := g.volumeEnv(ctx, name, false)
			if err != nil {
				return err
			}
			defer env.Close()
			marked, err := volumes.MarkUnused(ctx, env.Store, app, args)
			for _, n := range marked {
				fmt.Fprintf(g.streams.Out, "%s is legacy\n", n)
			}
			return err
		},
	}
	cmd.Flags().StringVarP(&name, "name", "n", "", "appliance (default: the only one in the state)")
	return cmd
}

// openEnvFor opens the state and, when engine is true, Podman.
func (g *globals) openEnvFor(ctx context.Context, engine bool) (*daemon.Env, error) {
	p, err := g.paths()
	if err != nil {
		return nil, err
	}
	if engine {
		return daemon.Open(ctx, p, g.log)
	}
	return daemon.OpenState(ctx, p, g.log)
}

func printVolumes(w io.Writer, infos []volumes.Info) {
	if len(infos) == 0 {
		fmt.Fprintln(w, "no volumes in the inventory")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "APPLIANCE\tVOLUME\tOWNER\tSIZE\tLEGACY\tMIGRATION")
	for _, v := range infos {
		owner := "-"
		if len(v.Services) > 0 {
			owner = strings.Join(v.Services, ",")
		}
		size := "-"
		switch {
		case !v.Exists:
			size = "missing"
		case v.Size >= 0:
			size = humanBytes(v.Size)
		}
		legacy := "-"
		if v.LegacySince != nil {
			legacy = fmt.Sprintf("since %s (revision %d)", v.LegacySince.Local().Format(time.DateTime), v.LegacyRevision)
		}
		switch {
		case v.External:
			legacy = "external"
		case v.Unrecorded:
			legacy = "not in the inventory"
		}
		var mig []string
		for _, to := range v.MigratedTo {
			mig = append(mig, "verified into "+to)
		}
		for _, to := range v.Unverified {
			mig = append(mig, "NOT verified into "+to)
		}
		if len(mig) == 0 {
			mig = []string{"-"}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", v.Appliance, v.Name, owner, size, legacy, strings.Join(mig, "; "))
	}
	tw.Flush()
}

func newVolumesPruneCmd(g *globals) *cobra.Command {
	var name string
	var legacy, yes, dryRun, asJSON bool
	var olderThan time.Duration
	cmd := &cobra.Command{
		Use:   "prune --legacy [VOLUME...]",
		Short: "Remove legacy volumes, after a typed confirmation",
		Long: `Remove legacy volumes of one appliance: volumes an upgrade stopped mounting
and kept for rollback. Only volumes that are legacy for longer than
--older-than, mounted by no active revision, and whose declared migrations
have a verified copy recorded (or that no migration reads) qualify; others
are listed with the reason they are kept. What would be removed is printed
first. At a terminal, type the volume names (or the appliance name) to
confirm; without one, pass --yes and the exact volume names as arguments.
Each removal is recorded with who confirmed it and why.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if !legacy {
				return errors.New("only legacy volumes can be pruned: pass --legacy")
			}
			ctx := cmd.Context()
			env, app, err := g.volumeEnv(ctx, name, true)
			if err != nil {
				return err
			}
			defer env.Close()
			// With --json, people's lines go to stderr.
			text := g.streams.Out
			if asJSON {
				text = g.streams.Err
			}
			opts := volumes.PruneOptions{Appliance: app, OlderThan: olderThan, Names: args}
			plan, err := volumes.PlanPrune(ctx, env.Store, opts)
			if err != nil {
				if errors.Is(err, volumes.ErrRefused) {
					printPlan(text, plan, true)
				}
				return err
			}
			if asJSON && dryRun {
				return printJSON(g.streams.Out, plan)
			}
			printPlan(text, plan, dryRun)
			if dryRun || len(plan.Remove) == 0 {
				return nil
			}
			by, err := confirmPrune(g.streams, plan, args, yes)
			if err != nil {
				return err
			}
			opts.Names = plan.Names()
			removed, err := volumes.Prune(ctx, env.Engine, env.Store, opts, by)
			for _, n := range removed {
				fmt.Fprintf(text, "removed %s\n", n)
			}
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(g.streams.Out, map[string]any{"appliance": app, "removed": removed, "by": by})
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&name, "name", "n", "", "appliance (default: the only one in the state)")
	cmd.Flags().BoolVar(&legacy, "legacy", false, "prune legacy volumes (required: no other volume is ever pruned)")
	cmd.Flags().DurationVar(&olderThan, "older-than", 720*time.Hour, "only volumes legacy for longer than this")
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "confirm without a terminal; needs the exact volume names as arguments")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "print what would be removed and stop")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// volumeEnv opens the state (and Podman when engine is true) and resolves
// the appliance: the one named, else the only one recorded.
func (g *globals) volumeEnv(ctx context.Context, name string, engine bool) (*daemon.Env, string, error) {
	env, err := g.openEnvFor(ctx, engine)
	if err != nil {
		return nil, "", err
	}
	if name != "" {
		return env, name, nil
	}
	names, err := env.Store.Appliances(ctx)
	if err == nil && len(names) != 1 {
		err = daemon.ErrNoAppliance
		if len(names) > 1 {
			err = fmt.Errorf("the state holds several appliances (%s): choose one with --name", strings.Join(names, ", "))
		}
	}
	if err != nil {
		env.Close()
		return nil, "", err
	}
	return env, names[0], nil
}

func printPlan(w io.Writer, plan volumes.PrunePlan, dryRun bool) {
	verb := "would remove"
	if !dryRun {
		verb = "to remove"
	}
	if len(plan.Remove) == 0 && len(plan.Keep) == 0 {
		fmt.Fprintf(w, "%s has no legacy volumes\n", plan.Appliance)
		return
	}
	if len(plan.Remove) == 0 {
		fmt.Fprintln(w, "nothing to remove")
	}
	for _, v := range plan.Remove {
		since := v.LegacySince.Local().Format(time.DateTime)
		fmt.Fprintf(w, "%s %s (owner %s, legacy since %s, revision %d)\n", verb, v.Name, strings.Join(v.Services, ","), since, v.LegacyRevision)
	}
	for _, k := range plan.Keep {
		fmt.Fprintf(w, "keep %s: %s\n", k.Name, k.Reason)
	}
}

// confirmPrune returns who confirmed removing the plan's volumes: --yes
// with exactly the plan's names as arguments, or, at a terminal, the names
// (or the appliance name) typed.
func confirmPrune(s Streams, plan volumes.PrunePlan, args []string, yes bool) (string, error) {
	who := "unknown user"
	if u, err := user.Current(); err == nil {
		who = u.Username
	}
	want := plan.Names()
	slices.Sort(want)
	if yes {
		got := slices.Clone(args)
		slices.Sort(got)
		got = slices.Compact(got)
		if len(got) == 0 || !slices.Equal(got, want) {
			return "", fmt.Errorf("refusing: --yes needs the exact names of the volumes to remove as arguments: outpost volumes prune --legacy --yes %s; nothing was removed", strings.Join(want, " "))
		}
		return who + " (outpost volumes prune --legacy --yes)", nil
	}
	f, ok := s.In.(*os.File)
	if !ok || !isTerminal(f) {
		return "", fmt.Errorf("refusing to remove volumes without a typed confirmation; in a non-interactive run pass --yes and the names: outpost volumes prune --legacy --yes %s; nothing was removed", strings.Join(want, " "))
	}
	fmt.Fprintf(s.Err, "This deletes the data of %d volume(s). It cannot be undone.\nType their names (%s) or the appliance name (%s) to confirm: ",
		len(want), strings.Join(want, " "), plan.Appliance)
	line, err := bufio.NewReader(f).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("reading confirmation: %w", err)
	}
	typed := strings.Fields(line)
	slices.Sort(typed)
	if !(len(typed) == 1 && typed[0] == plan.Appliance) && !slices.Equal(slices.Compact(typed), want) {
		return "", errors.New("confirmation did not match; nothing was removed")
	}
	return who + " (outpost volumes prune --legacy, typed confirmation)", nil
}

func newVolumesMigrateCmd(g *globals) *cobra.Command {
	var def defOptions
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "migrate [FROM TO]",
		Short: "Run the deployed definition's volume migrations (or copy volume FROM into TO)",
		Long: `Copy volumes as an upgrade does: the deployed definition's
x-outpost volumes.migrations, or FROM into TO (Compose volume keys). The copy
runs in a helper container inside the rootless user namespace, preserves
owners, modes, times and links, is verified by entry count and checksum, and
leaves a completion marker in the destination; the source is kept. A
destination that already has the marker is skipped; one holding other data is
refused. The services mounting either volume must be stopped
(` + "`outpost down`" + `).`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 0 && len(args) != 2 {
				return errors.New("give no arguments (the declared migrations) or FROM and TO")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withDeployed(cmd.Context(), &def, true, func(ctx context.Context, env *daemon.Env, app *model.Appliance) error {
				migs := app.VolumeMigrations
				if len(args) == 2 {
					migs = []model.VolumeMigration{{From: args[0], To: args[1]}}
				}
				if len(migs) == 0 {
					return fmt.Errorf("%s declares no volume migrations (x-outpost volumes.migrations); name FROM and TO", app.Name)
				}
				// The upgrade's lock: an upgrade migrates volumes too.
				release, err := env.Store.AcquireLock(ctx, upgrade.LockName(app.Name), "outpost volumes migrate")
				if err != nil {
					return err
				}
				defer func() { _ = release() }()
				type result struct {
					model.VolumeMigration
					volumes.MigrationResult
				}
				var results []result
				for _, m := range migs {
					running, err := volumes.RunningUsers(ctx, env.Engine, env.Store, app, m.From, m.To)
					if err != nil {
						return err
					}
					if len(running) > 0 {
						return fmt.Errorf("migrating volume %s into %s: %s still running; stop the appliance first (outpost down)", m.From, m.To, strings.Join(running, ", "))
					}
					res, err := volumes.Migrate(ctx, env.Engine, env.Store, app, m, g.log)
					if err != nil {
						return err
					}
					results = append(results, result{m, res})
					if !asJSON {
						what := "copied"
						if res.Skipped {
							what = "already migrated (marker present), skipped"
						}
						fmt.Fprintf(g.streams.Out, "%s -> %s: %s, %d entries, %s, %s, %s\n", m.From, m.To, what, res.Files,
							humanBytes(res.Bytes), res.Checksum, res.Duration.Round(10*time.Millisecond))
					}
				}
				if asJSON {
					return printJSON(g.streams.Out, results)
				}
				return nil
			})
		},
	}
	def.register(cmd.Flags())
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// newVolumeCopyCmd is the copy tool run inside the helper container.
func newVolumeCopyCmd() *cobra.Command {
	var o volumes.CopyOptions
	var idle bool
	cmd := &cobra.Command{
		Use:    volumes.CopyCommand,
		Short:  "Copy one mounted volume into another, verified (runs inside a helper container)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if idle {
				return volumes.Idle(cmd.Context())
			}
			rep, err := volumes.CopyTree(o)
			if err != nil {
				return err
			}
			return json.NewEncoder(cmd.OutOrStdout()).Encode(rep)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&idle, "idle", false, "wait until stopped (the helper's main process)")
	f.StringVar(&o.From, "from", "", "source directory")
	f.StringVar(&o.To, "to", "", "destination directory")
	f.StringVar(&o.FromName, "from-name", "", "source volume name (for the marker)")
	f.StringVar(&o.ToName, "to-name", "", "destination volume name (for the marker)")
	return cmd
}
