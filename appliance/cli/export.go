package cli

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/outpostdev/outpost/appliance/export"
	"github.com/outpostdev/outpost/appliance/secrets"
)

func newExportCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "export",
		Short: "Write the appliance for other runtimes (Kubernetes, podman kube play)",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(newExportKubeCmd(g), newExportQuadletCmd(g))
	return cmd
}

func newExportQuadletCmd(g *globals) *cobra.Command {
	var (
		def   defOptions
		out   string
		force bool
	)
	cmd := &cobra.Command{
		Use:   "quadlet",
		Short: "Write the appliance as Podman Quadlet units (.container, .volume, .network)",
		Long: `Write the appliance definition as Podman Quadlet units into a directory: a
.network per network, a .volume per named volume, and a .container per
service, per job (a oneshot unit) and for the service the embedded proxy
replaces. depends_on becomes systemd ordering: a service with a healthcheck
is active only once healthy (Notify=healthy), so a dependant's After= waits
for service_healthy. Secrets are Podman secrets that the operator creates.
The units are written with Podman's own unit-file writer and need Podman 5.

What Quadlet cannot express is listed on standard error, each line naming
the Compose or x-outpost field.`,
		Example: `  outpost export quadlet -f compose.yml -o ~/.config/containers/systemd/
  systemctl --user daemon-reload`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return errors.New("name the directory to write the units into with -o DIR")
			}
			l, err := def.load(cmd.Context(), g)
			if err != nil {
				return err
			}
			p, err := g.paths()
			if err != nil {
				return err
			}
			files, notes, err := export.Quadlet(l.app, export.QuadletOptions{SecretsDir: secrets.Dir(p.StateDir, l.app.Name)})
			if err != nil {
				return err
			}
			if err := writeUnits(out, files, force); err != nil {
				return err
			}
			for _, n := range notes {
				fmt.Fprintln(g.streams.Err, "not carried over:", n.String())
			}
			for _, f := range files {
				fmt.Fprintln(g.streams.Out, filepath.Join(out, f.Name))
			}
			return nil
		},
	}
	def.register(cmd.Flags())
	cmd.Flags().StringVarP(&out, "output", "o", "", "directory to write the units into (created if missing)")
	cmd.Flags().BoolVar(&force, "force", false, "replace unit files that exist with other content")
	return cmd
}

// writeUnits writes files into dir. A file there that an earlier export
// wrote and nobody changed since is replaced; unless force, any other file
// of the same name (edited, or not an export's) is refused before anything
// is written.
func writeUnits(dir string, files []export.QuadletFile, force bool) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", dir, err)
	}
	if !force {
		for _, f := range files {
			path := filepath.Join(dir, f.Name)
			old, err := os.ReadFile(path)
			switch {
			case errors.Is(err, os.ErrNotExist):
			case err != nil:
				return fmt.Errorf("reading %s: %w", path, err)
			case string(old) != f.Content && !export.Pristine(old):
				return fmt.Errorf("%s was changed since it was exported, or is not an export's; nothing was written (pass --force to replace it)", path)
			}
		}
	}
	for _, f := range files {
		if err := writeExport(filepath.Join(dir, f.Name), []byte(f.Content), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func newExportKubeCmd(g *globals) *cobra.Command {
	var (
		def         defOptions
		target      string
		namespace   string
		out         string
		withSecrets bool
		storage     string
	)
	cmd := &cobra.Command{
		Use:   "kube",
		Short: "Write Kubernetes manifests of the appliance (or what `podman kube play` runs)",
		Long: `Write the appliance definition as Kubernetes manifests, for users who
outgrow one box: with --target kubernetes (the default) a Deployment and a
Service per service (rotatable services roll, stateful ones are recreated),
a PersistentVolumeClaim per volume, a Job per x-outpost job, probes from the
healthchecks, and secrets as references to one Secret; with --target podman
a Pod per service, named after it, that ` + "`podman kube play --network NET`" + `
runs on one box without Outpost.

What Kubernetes cannot express is left out and listed on standard error,
each line naming the Compose or x-outpost field; nothing is dropped
silently. Secret values are written only with --with-secrets (read from this
user's state directory, where ` + "`outpost install`" + ` generated them); the file
is then created 0600.`,
		Example: `  outpost export kube -f compose.yml -o tale.yaml
  outpost export kube -f compose.yml --target podman --with-secrets -o tale-podman.yaml
  podman network create tale && podman kube play --network tale tale-podman.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			l, err := def.load(ctx, g)
			if err != nil {
				return err
			}
			p, err := g.paths()
			if err != nil {
				return err
			}
			dir := secrets.Dir(p.StateDir, l.app.Name)
			opts := export.Options{Target: export.Target(target), Namespace: namespace, StorageRequest: storage, SecretsDir: dir}
			if withSecrets && len(l.app.Secrets) > 0 {
				values, err := secrets.Load(dir, l.app)
				if err != nil {
					return fmt.Errorf("--with-secrets: %w", err)
				}
				opts.SecretValues = values
			}
			data, notes, err := export.Kube(l.app, opts)
			if err != nil {
				return err
			}
			for _, n := range notes {
				fmt.Fprintln(g.streams.Err, "not carried over:", n.String())
			}
			if out == "" || out == "-" {
				_, err := g.streams.Out.Write(data)
				return err
			}
			if err := writeExport(out, data, 0o600); err != nil {
				return err
			}
			fmt.Fprintf(g.streams.Err, "wrote %s (%d bytes)\n", out, len(data))
			return nil
		},
	}
	def.register(cmd.Flags())
	cmd.Flags().StringVar(&target, "target", string(export.TargetKubernetes), "kubernetes (Deployments, Services, Jobs) or podman (Pods for `podman kube play`)")
	cmd.Flags().StringVar(&namespace, "namespace", "", "namespace written into every object (default: none, the one kubectl uses)")
	cmd.Flags().StringVarP(&out, "output", "o", "", "write to this file (0600) instead of standard output")
	cmd.Flags().BoolVar(&withSecrets, "with-secrets", false, "write the secret values (from this user's state directory) into the manifests")
	cmd.Flags().StringVar(&storage, "storage", "1Gi", "size each PersistentVolumeClaim requests")
	return cmd
}

// writeExport writes data to path with perm (0600 for what may hold
// secret values) through a temporary file beside it, so that a failure
// leaves no partial file.
func writeExport(path string, data []byte, perm os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
