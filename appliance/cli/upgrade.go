package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/outpostdev/outpost/appliance/daemon"
	"github.com/outpostdev/outpost/appliance/model"
	"github.com/outpostdev/outpost/appliance/store"
	"github.com/outpostdev/outpost/appliance/upgrade"
)

// crashAtEnv names the step at which an upgrade ends the process as kill -9
// would (crash-injection tests).
const crashAtEnv = "OUTPOST_UPGRADE_CRASH_AT"

func upgradeCommands(g *globals) []*cobra.Command {
	return []*cobra.Command{newUpgradeCmd(g), newRollbackCmd(g), newHistoryCmd(g)}
}

func crashAt() (int, error) {
	v := os.Getenv(crashAtEnv)
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, fmt.Errorf("%s=%q: want a step number", crashAtEnv, v)
	}
	return n, nil
}

func newUpgradeCmd(g *globals) *cobra.Command {
	var def defOptions
	var dryRun, resume, skipBackup, asJSON bool
	var timeout time.Duration
	var ub upBundleFlags
	cmd := &cobra.Command{
		Use:   "upgrade (-f NEW.yml... | --bundle FILE)",
		Short: "Upgrade the deployed appliance to a new definition as one journaled transaction",
		Long: `Compute what changes from the deployed revision to the new definition, then
apply it under the appliance's lock with every step journaled before it runs:
a snapshot first when data can change, volume migrations, rotatable services
started beside their old copy and switched in the proxy once healthy,
stateful services replaced in place with their full stop timeout, jobs with
when: upgrade between phases. Any failure rolls the whole appliance back to
the previous revision. --dry-run prints the plan and changes nothing;
--resume settles an upgrade a killed process left open.

With --bundle, the whole bundle is verified first (signature, every entry's
checksum) and nothing changes unless it is intact and signed by a trusted
key; then its missing images are loaded and the upgrade goes to its Compose
files, images pinned by ID. With --dry-run the bundle is verified but no
image is loaded.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			progress := progressPrinter(g.streams.Err)
			if resume {
				return g.withDeployed(ctx, &def, true, func(ctx context.Context, env *daemon.Env, app *model.Appliance) error {
					res, err := upgrade.New(env.Engine, env.Store, env.Runtime, env.Log).Recover(ctx, app.Name, nil, progress)
					if err != nil {
						return err
					}
					fmt.Fprintf(g.streams.Out, "%s: %d open operation(s) finished, %d rolled back\n", app.Name, len(res.Finished), len(res.RolledBack))
					return nil
				})
			}
			if !def.given() && ub.file == "" {
				return errors.New("name the new definition with -f (repeat to merge) or --bundle FILE, or pass --resume")
			}
			at, err := crashAt()
			if err != nil {
				return err
			}
			b, err := ub.prepare(ctx, g, &def, bundleUse{verifyFirst: true, dryRun: dryRun, check: deployedHere})
			if err != nil {
				return err
			}
			l, err := def.load(ctx, g)
			if err != nil {
				return err
			}
			b.pin(l.app)
			var res *upgrade.Result
			if c := g.client(); c != nil {
				res, err = c.Upgrade(ctx, daemon.UpgradeRequest{Appliance: l.app, DryRun: dryRun, SkipBackup: skipBackup, Timeout: timeout, CrashAt: at,
					OutpostVersion: Version, PendingImages: b.pending}, progress)
			} else {
				env, oerr := g.openEnv(ctx)
				if oerr != nil {
					return oerr
				}
				defer env.Close()
				app, serr := env.WithSecrets(l.app)
				if serr != nil {
					return serr
				}
				res, err = upgrade.New(env.Engine, env.Store, env.Runtime, env.Log).Upgrade(ctx, upgrade.Options{
					App: app, StateDir: env.Paths.StateDir, DryRun: dryRun, SkipBackup: skipBackup, Timeout: timeout, Progress: progress,
					CrashAt: at, OutpostVersion: Version, Owner: "outpost upgrade (pid " + strconv.Itoa(os.Getpid()) + ")", PendingImages: b.pending,
				})
			}
			if err != nil {
				return err
			}
			return printUpgrade(g, res, asJSON, "upgraded")
		},
	}
	def.register(cmd.Flags())
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "print the plan and change nothing")
	cmd.Flags().BoolVar(&skipBackup, "skip-backup", false, "do not take the snapshot a data-changing plan otherwise takes first (an upgrade refuses to go on when that snapshot fails)")
	cmd.Flags().BoolVar(&resume, "resume", false, "finish or roll back an upgrade a killed process left open, then exit")
	cmd.Flags().DurationVar(&timeout, "timeout", 0, "roll back unless the upgrade is done within this time (default: each service's own health rules)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	ub.register(cmd, "upgrade to this signed bundle: verify all of it, load its missing images, then upgrade to its Compose files (-f files are merged after them) with images pinned by ID")
	return cmd
}

// deployedHere refuses a bundle for an appliance with no active revision
// here, before its images are loaded: there is nothing to upgrade.
func deployedHere(ctx context.Context, env *daemon.Env, appliance string) error {
	if _, err := env.Store.ActiveRevision(ctx, appliance); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("it holds appliance %s, which has no active revision here: %w (install it with `outpost up --bundle`, or choose the deployed appliance with --name)", appliance, upgrade.ErrNothingDeployed)
		}
		return err
	}
	return nil
}

func printUpgrade(g *globals, res *upgrade.Result, asJSON bool, verb string) error {
	if asJSON {
		return printJSON(g.streams.Out, res)
	}
	if res.DryRun {
		fmt.Fprint(g.streams.Out, res.Plan.Render())
		fmt.Fprintln(g.streams.Out, "dry run: nothing was changed")
		return nil
	}
	if res.Plan.Unchanged {
		fmt.Fprintf(g.streams.Out, "%s: nothing changes (revision %d stays active)\n", res.Plan.Appliance, res.Revision)
		return nil
	}
	fmt.Fprintf(g.streams.Out, "%s %s: revision %d → %d in %s\n", res.Plan.Appliance, verb, res.PreviousRevision, res.Revision, res.Duration.Round(100*time.Millisecond))
	if res.Snapshot != "" {
		fmt.Fprintf(g.streams.Out, "snapshot taken before: %s\n", res.Snapshot)
	}
	if len(res.Legacy) > 0 {
		fmt.Fprintf(g.streams.Out, "legacy volumes (kept; see `outpost volumes`): %s\n", strings.Join(res.Legacy, ", "))
	}
	return nil
}

func newRollbackCmd(g *globals) *cobra.Command {
	var def defOptions
	var dryRun, asJSON bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "rollback [REVISION]",
		Short: "Return the appliance to a recorded revision (default: the previous one)",
		Long: `Apply a recorded revision again as one journaled transaction, the same way an
upgrade does (every service back on that revision's spec and image, the proxy
as it was). A rollback across a completed volume migration is refused: restore
the snapshot taken before that upgrade instead (the message names it).`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			var rev int64
			if len(args) == 1 {
				n, err := strconv.ParseInt(strings.TrimPrefix(args[0], "r"), 10, 64)
				if err != nil {
					return fmt.Errorf("revision %q: want a number from `outpost history`", args[0])
				}
				rev = n
			}
			at, err := crashAt()
			if err != nil {
				return err
			}
			progress := progressPrinter(g.streams.Err)
			var res *upgrade.Result
			if c := g.client(); c != nil && !def.given() {
				res, err = c.Rollback(ctx, daemon.UpgradeRequest{Name: def.name, Revision: rev, DryRun: dryRun, Timeout: timeout, CrashAt: at}, progress)
			} else {
				err = g.withDeployed(ctx, &def, true, func(ctx context.Context, env *daemon.Env, app *model.Appliance) error {
					var rerr error
					res, rerr = upgrade.New(env.Engine, env.Store, env.Runtime, env.Log).Rollback(ctx, upgrade.RollbackOptions{
						Appliance: app.Name, Revision: rev, StateDir: env.Paths.StateDir, Timeout: timeout,
						Progress: progress, CrashAt: at, DryRun: dryRun,
					})
					return rerr
				})
			}
			if err != nil {
				return err
			}
			return printUpgrade(g, res, asJSON, "rolled back")
		},
	}
	def.register(cmd.Flags())
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "print the plan and change nothing")
	cmd.Flags().DurationVar(&timeout, "timeout", 0, "give up (and return to the current revision) unless done within this time")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	return cmd
}

func newHistoryCmd(g *globals) *cobra.Command {
	var def defOptions
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "history",
		Short: "List the appliance's revisions with their status",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.withDeployed(cmd.Context(), &def, false, func(ctx context.Context, env *daemon.Env, app *model.Appliance) error {
				revs, err := upgrade.New(nil, env.Store, env.Runtime, env.Log).History(ctx, app.Name)
				if err != nil {
					return err
				}
				if asJSON {
					type row struct {
						ID        int64             `json:"id"`
						Version   string            `json:"version,omitempty"`
						Status    string            `json:"status"`
						CreatedAt time.Time         `json:"created_at"`
						AppliedAt time.Time         `json:"applied_at,omitzero"`
						Images    map[string]string `json:"images,omitempty"`
					}
					rows := make([]row, 0, len(revs))
					for _, r := range revs {
						rows = append(rows, row{r.ID, r.Version, string(r.Status), r.CreatedAt, r.AppliedAt, r.Images})
					}
					return printJSON(g.streams.Out, rows)
				}
				tw := tabwriter.NewWriter(g.streams.Out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "REVISION\tSTATUS\tVERSION\tCREATED\tAPPLIED")
				for _, r := range revs {
					applied := "-"
					if !r.AppliedAt.IsZero() {
						applied = r.AppliedAt.Local().Format(time.DateTime)
					}
					fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", r.ID, r.Status, orDash(r.Version), r.CreatedAt.Local().Format(time.DateTime), applied)
				}
				return tw.Flush()
			})
		},
	}
	def.register(cmd.Flags())
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// recoverOpen settles an upgrade or rollback a killed process left open
// for the appliance the definition flags select, before up or run start
// it. Nothing deployed is not an error.
func recoverOpen(ctx context.Context, g *globals, env *daemon.Env, def *defOptions) error {
	app, err := def.deployed(ctx, g, env)
	if err != nil {
		return nil // nothing recorded to recover; the caller reports its own errors
	}
	return daemon.RecoverUpgrades(ctx, env, app.Name, progressPrinter(g.streams.Err))
}
