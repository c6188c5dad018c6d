package cli

import (
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
	cmd.AddCommand(newExportKubeCmd(g))
	return cmd
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
			if err := writeExport(out, data); err != nil {
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

// writeExport writes data to path 0600 (it may hold secret values) through
// a temporary file beside it, so that a failure leaves no partial file.
func writeExport(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
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
