package cli

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/outpostdev/outpost/appliance/bundle"
	"github.com/outpostdev/outpost/appliance/daemon"
	"github.com/outpostdev/outpost/appliance/engine"
	"github.com/outpostdev/outpost/appliance/model"
)

// newBundleCmd is `outpost bundle`: build, verify, load, inspect and
// extract air-gap bundles, and make signing keys.
func newBundleCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bundle",
		Short: "Build, verify, load and inspect signed air-gap bundles",
		Long: `An air-gap bundle is one signed file holding an appliance's Compose files,
env templates, images, the outpost binary and install.sh. It is verified in
full before anything on the host changes. See docs/bundles.md.`,
	}
	cmd.AddCommand(newBundleBuildCmd(g), newBundleVerifyCmd(g), newBundleLoadCmd(g),
		newBundleInspectCmd(g), newBundleExtractCmd(g), newBundleKeygenCmd(g))
	return cmd
}

// trustFlags are the flags choosing the keys a bundle must be signed by.
type trustFlags struct {
	pubkeys []string
}

func (t *trustFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringArrayVar(&t.pubkeys, "pubkey", nil, "trusted public key file or directory of *.pub files (repeatable; default $OUTPOST_BUNDLE_PUBKEY, else "+strings.Join(defaultTrustDirs(), ", ")+")")
}

// defaultTrustDirs are where trusted bundle keys live when no --pubkey is
// given: the system directory, and the user's own when not root.
func defaultTrustDirs() []string {
	dirs := []string{"/etc/outpost/bundle-keys"}
	if os.Geteuid() != 0 {
		if d, err := os.UserConfigDir(); err == nil {
			dirs = append(dirs, filepath.Join(d, "outpost", "bundle-keys"))
		}
	}
	return dirs
}

// trust reads the trusted keys; it fails, saying how to fix it, when
// there are none.
func (t *trustFlags) trust() (*bundle.Trust, error) {
	paths := t.pubkeys
	if len(paths) == 0 {
		if env := os.Getenv("OUTPOST_BUNDLE_PUBKEY"); env != "" {
			paths = strings.Split(env, string(os.PathListSeparator))
		}
	}
	if len(paths) == 0 {
		for _, d := range defaultTrustDirs() {
			if st, err := os.Stat(d); err == nil && st.IsDir() {
				paths = append(paths, d)
			}
		}
	}
	tr, err := bundle.ReadTrust(paths...)
	if err != nil {
		return nil, err
	}
	if tr.Len() == 0 {
		return nil, fmt.Errorf("no trusted bundle key: pass --pubkey FILE (the vendor's .pub file) or put it into %s", strings.Join(defaultTrustDirs(), " or "))
	}
	return tr, nil
}

// progress returns a progress reporter on stderr: a bar on a terminal,
// plain lines otherwise, nothing with quiet.
func (g *globals) progress(quiet bool) bundle.Progress {
	if quiet {
		return bundle.NoProgress()
	}
	tty := false
	if f, ok := g.streams.Err.(*os.File); ok {
		if st, err := f.Stat(); err == nil {
			tty = st.Mode()&os.ModeCharDevice != 0
		}
	}
	return bundle.NewProgress(g.streams.Err, tty)
}

func newBundleBuildCmd(g *globals) *cobra.Command {
	var (
		def     defOptions
		out     string
		signKey string
		sources []string
		binary  string
		noBin   bool
		install string
		tmpDir  string
		asJSON  bool
		quiet   bool
		builds  []string
		args    []string
		target  string
		gitTags bool
	)
	cmd := &cobra.Command{
		Use:   "build -f compose.yml -o app.outpost --sign-key vendor.key",
		Short: "Build one signed bundle from the definition, its images, outpost and install.sh",
		Long: `Collect every image the definition uses — from --from sources (docker-archive
or oci-archive files, OCI layout directories), else from Podman's local
storage — pin each by image ID, and write one signed bundle file with the
Compose files, --env-file templates, images (uncompressed layers in a zstd
stream), this outpost binary and install.sh (from --install-script, else
beside the binary). The same inputs give the same bytes; set
SOURCE_DATE_EPOCH to record a build time.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if !def.given() {
				return errors.New("bundle build: pass the Compose file(s) with -f")
			}
			l, err := def.load(ctx, g)
			if err != nil {
				return err
			}
			if signKey == "" {
				return errors.New("bundle build: pass --sign-key FILE (create a key pair with `outpost bundle keygen`)")
			}
			key, err := bundle.ReadPrivateKey(signKey)
			if err != nil {
				return err
			}
			if !noBin && binary == "" {
				if binary, err = os.Executable(); err != nil {
					return fmt.Errorf("locating the outpost binary (pass --outpost-bin): %w", err)
				}
			}
			if noBin {
				binary = ""
			}
			if install == "" && binary != "" {
				if p := filepath.Join(filepath.Dir(binary), "install.sh"); fileExists(p) {
					install = p
				}
			}
			created, err := sourceDateEpoch()
			if err != nil {
				return err
			}
			var ibs []bundle.ImageBuild
			for _, b := range builds {
				ib, err := bundle.ParseImageBuild(b)
				if err != nil {
					return err
				}
				ib.Target = target
				ibs = append(ibs, ib)
			}
			buildArgs := map[string]string{}
			for _, a := range args {
				k, v, ok := strings.Cut(a, "=")
				if !ok || k == "" {
					return fmt.Errorf("--build-arg %q: want NAME=VALUE", a)
				}
				buildArgs[k] = v
			}
			eng := &lazyEngine{open: func() (engine.Engine, func(), error) {
				env, err := g.openEnv(ctx)
				if err != nil {
					return nil, nil, err
				}
				return env.Engine, func() { env.Close() }, nil
			}}
			defer eng.close()
			res, err := bundle.Build(ctx, bundle.BuildOptions{
				Appliance: l.app.Name, Version: l.app.Version,
				ComposeFiles: def.files, EnvFiles: def.envFiles,
				Images:  imageRefs(l.app),
				Sources: sources, Engine: eng,
				Builds: ibs, BuildArgs: buildArgs, GitTags: gitTags, Builder: eng, BuildLog: buildLog(g, quiet || asJSON),
				Outpost: binary, OutpostVersion: Version, InstallScript: install,
				SignKey: key, Output: out, TmpDir: tmpDir, Created: created,
				Progress: g.progress(quiet || asJSON), Log: g.log,
			})
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(g.streams.Out, res)
			}
			m := res.Manifest
			fmt.Fprintf(g.streams.Out, "wrote %s: %s, %d images, %s (%s uncompressed) in %s\n", res.Path, nameVersion(m),
				len(m.Images), bundle.HumanBytes(res.Size), bundle.HumanBytes(m.TotalSize()), res.Duration.Round(100*time.Millisecond))
			fmt.Fprintf(g.streams.Out, "sha256 %s\nsigned by %s\n", res.SHA256, res.KeyID)
			if install == "" {
				fmt.Fprintln(g.streams.Out, "note: no install.sh was found beside the binary; pass --install-script to include one")
			}
			return nil
		},
	}
	def.register(cmd.Flags())
	f := cmd.Flags()
	f.StringVarP(&out, "output", "o", "", "bundle file to write (required)")
	f.StringVar(&signKey, "sign-key", "", "ed25519 private key (PEM) to sign with (required)")
	f.StringArrayVar(&sources, "from", nil, "image source searched before Podman's storage: docker-archive or oci-archive file, OCI layout dir, or REF=PATH (repeatable)")
	f.StringVar(&binary, "outpost-bin", "", "outpost binary to include (default: this one)")
	f.BoolVar(&noBin, "no-outpost-bin", false, "do not include the outpost binary")
	f.StringVar(&install, "install-script", "", "install.sh to include (default: install.sh beside the binary, when present)")
	f.StringVar(&tmpDir, "tmp-dir", "", "directory for image archives while building (default: the output's directory)")
	f.BoolVar(&asJSON, "json", false, "print the result as JSON")
	f.BoolVarP(&quiet, "quiet", "q", false, "no progress output")
	f.StringArrayVar(&builds, "build", nil, "build REF from a Containerfile first: REF=DIR or REF=CONTAINERFILE (repeatable; never pulls)")
	f.StringArrayVar(&args, "build-arg", nil, "build argument NAME=VALUE for every --build (repeatable), e.g. VERSION=1.2.0, INSTALL_CJK_FONTS=true")
	f.StringVar(&target, "build-target", "", "stage of multi-stage Containerfiles to build (default: the last)")
	f.BoolVar(&gitTags, "git-tags", false, "also tag built images by their context's git ref (<branch>, sha-<7 hex>, exact tag); VERSION defaults to it")
	_ = cmd.MarkFlagRequired("output")
	return cmd
}

// buildLog is where image builds print: stderr unless quiet.
func buildLog(g *globals, quiet bool) io.Writer {
	if quiet {
		return io.Discard
	}
	return g.streams.Err
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

// sourceDateEpoch reads SOURCE_DATE_EPOCH (reproducible-builds.org).
func sourceDateEpoch() (time.Time, error) {
	v := os.Getenv("SOURCE_DATE_EPOCH")
	if v == "" {
		return time.Time{}, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH=%q is not a number of seconds", v)
	}
	return time.Unix(n, 0).UTC(), nil
}

// imageRefs lists the definition's images with the services using them.
func imageRefs(app *model.Appliance) []bundle.ImageRef {
	by := map[string][]string{}
	for _, name := range app.ServiceNames() {
		svc := app.Services[name]
		by[svc.Image] = append(by[svc.Image], name)
	}
	var out []bundle.ImageRef
	for ref, svcs := range by {
		out = append(out, bundle.ImageRef{Ref: ref, Services: svcs})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Ref < out[j].Ref })
	return out
}

// lazyEngine connects to Podman only when an image must come from its
// storage, so bundles built from archives need no Podman at all.
type lazyEngine struct {
	open   func() (engine.Engine, func(), error)
	once   sync.Once
	eng    engine.Engine
	closer func()
	err    error
}

func (l *lazyEngine) get() (engine.Engine, error) {
	l.once.Do(func() { l.eng, l.closer, l.err = l.open() })
	return l.eng, l.err
}

func (l *lazyEngine) close() {
	if l.closer != nil {
		l.closer()
	}
}

// ImageInspect implements bundle.ImageSaver.
func (l *lazyEngine) ImageInspect(ctx context.Context, ref string) (engine.ImageInfo, error) {
	e, err := l.get()
	if err != nil {
		return engine.ImageInfo{}, err
	}
	return e.ImageInspect(ctx, ref)
}

// BuildImage implements bundle.ImageBuilder.
func (l *lazyEngine) BuildImage(ctx context.Context, spec engine.BuildSpec) (string, error) {
	e, err := l.get()
	if err != nil {
		return "", err
	}
	return e.BuildImage(ctx, spec)
}

// SaveImage implements bundle.ImageSaver.
func (l *lazyEngine) SaveImage(ctx context.Context, ref string, w io.Writer) error {
	e, err := l.get()
	if err != nil {
		return err
	}
	return e.SaveImage(ctx, ref, w)
}

func newBundleVerifyCmd(g *globals) *cobra.Command {
	var tf trustFlags
	var asJSON, quiet bool
	cmd := &cobra.Command{
		Use:   "verify FILE",
		Short: "Check a bundle's signature and every entry's size and checksum; changes nothing",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			tr, err := tf.trust()
			if err != nil {
				return err
			}
			res, err := bundle.Verify(cmd.Context(), args[0], bundle.VerifyOptions{Trust: tr, Progress: g.progress(quiet || asJSON), Log: g.log})
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(g.streams.Out, res)
			}
			m := res.Manifest
			fmt.Fprintf(g.streams.Out, "%s: OK — %s, %d entries, %d images, %s, signed by %s, verified in %s\n", res.Path, nameVersion(m),
				len(m.Entries), len(m.Images), bundle.HumanBytes(res.PayloadSize), res.KeyID, res.Duration.Round(10*time.Millisecond))
			return nil
		},
	}
	tf.register(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "no progress output")
	return cmd
}

func newBundleLoadCmd(g *globals) *cobra.Command {
	var tf trustFlags
	var asJSON, quiet bool
	var parallel int
	var verifyFirst bool
	cmd := &cobra.Command{
		Use:   "load FILE",
		Short: "Verify a bundle and load its images into Podman; nothing changes unless all of it verifies",
		Long: `Verify the bundle and stream its images into Podman in one read of the file.
Images already present (same image ID) are skipped. Free space is checked
first. An image is imported only after all of its bytes matched the signed
manifest (by default as soon as they have, overlapping the import with
reading the rest; with --verify-first only once the whole bundle has
verified). Any failure removes what this load imported: the host is left as
it was. FILE - reads the bundle from standard input.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			tr, err := tf.trust()
			if err != nil {
				return err
			}
			env, err := g.openEnv(ctx)
			if err != nil {
				return err
			}
			defer env.Close()
			res, err := bundle.Load(ctx, args[0], bundle.LoadOptions{Trust: tr, Engine: env.Engine, Parallel: parallel, VerifyFirst: verifyFirst, Progress: g.progress(quiet || asJSON), Log: g.log})
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(g.streams.Out, res)
			}
			printLoad(g.streams.Out, res)
			return nil
		},
	}
	tf.register(cmd)
	cmd.Flags().IntVar(&parallel, "parallel", 4, "images Podman imports at once")
	cmd.Flags().BoolVar(&verifyFirst, "verify-first", false, "import nothing until the whole bundle has verified (slower)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "no progress output")
	return cmd
}

func printLoad(w io.Writer, res *bundle.LoadResult) {
	m := res.Manifest
	for _, img := range res.Loaded {
		fmt.Fprintf(w, "loaded   %s  %s\n", shortID(img.ID), strings.Join(img.Refs, " "))
	}
	for _, img := range res.Skipped {
		note := "present"
		if len(img.Retagged) > 0 {
			note = "present, retagged " + strings.Join(img.Retagged, " ")
		}
		fmt.Fprintf(w, "skipped  %s  %s (%s)\n", shortID(img.ID), strings.Join(img.Refs, " "), note)
	}
	var loaded int64
	for _, img := range res.Loaded {
		loaded += img.Bytes
	}
	rate := ""
	if s := res.Duration.Seconds(); s > 0 && loaded > 0 {
		rate = fmt.Sprintf(", %s/s", bundle.HumanBytes(int64(float64(loaded)/s)))
	}
	fmt.Fprintf(w, "%s: %d loaded, %d already present; %s in %s (reading and verifying %s, then importing %s%s); signed by %s\n",
		nameVersion(m), len(res.Loaded), len(res.Skipped), bundle.HumanBytes(loaded), res.Duration.Round(10*time.Millisecond),
		res.VerifyDuration.Round(10*time.Millisecond), res.ImportDuration.Round(10*time.Millisecond), rate, res.KeyID)
}

// nameVersion is "appliance version", or the name alone.
func nameVersion(m *bundle.Manifest) string {
	if m.Version == "" {
		return m.Appliance
	}
	return m.Appliance + " " + m.Version
}

func shortID(id string) string {
	id = strings.TrimPrefix(id, "sha256:")
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

func newBundleInspectCmd(g *globals) *cobra.Command {
	var tf trustFlags
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "inspect FILE",
		Short: "List a bundle's images (tags, digests, sizes, labels) and entries",
		Long: `Print what the bundle's manifest says: appliance, version, signing key, Compose
files, and every image with its tags (and their kind in the vendor's scheme:
semver, sha, branch, latest), image ID, size and OCI labels. Only the start
of the file is read; with --pubkey the signature is checked too (use verify
to check every byte).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var tr *bundle.Trust
			if len(tf.pubkeys) > 0 {
				var err error
				if tr, err = tf.trust(); err != nil {
					return err
				}
			}
			res, err := bundle.Inspect(args[0], bundle.InspectOptions{Trust: tr})
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(g.streams.Out, res)
			}
			printInspect(g.streams.Out, res)
			return nil
		},
	}
	cmd.Flags().StringArrayVar(&tf.pubkeys, "pubkey", nil, "check the signature against this public key (repeatable)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the manifest as JSON")
	return cmd
}

// ociLabels are the labels inspect shows (the rest are in --json).
var ociLabels = []string{"org.opencontainers.image.version", "org.opencontainers.image.revision", "org.opencontainers.image.source", "org.opencontainers.image.created"}

func printInspect(w io.Writer, res *bundle.InspectResult) {
	m := res.Manifest
	fmt.Fprintf(w, "bundle     %s (%s)\n", res.Path, bundle.HumanBytes(res.FileSize))
	fmt.Fprintf(w, "appliance  %s\n", nameVersion(m))
	if m.Created != "" {
		fmt.Fprintf(w, "created    %s\n", m.Created)
	}
	fmt.Fprintf(w, "signed by  %s (signature %s)\n", res.KeyID, res.Signature)
	fmt.Fprintf(w, "compose    %s\n", strings.Join(m.ComposeFiles, " "))
	if len(m.EnvFiles) > 0 {
		fmt.Fprintf(w, "env        %s\n", strings.Join(m.EnvFiles, " "))
	}
	if m.OutpostVersion != "" {
		fmt.Fprintf(w, "outpost    %s\n", m.OutpostVersion)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "IMAGE ID\tTAGS\tSERVICES\tSIZE\tPLATFORM\tLABELS")
	for _, img := range m.Images {
		var tags []string
		for _, r := range img.Refs {
			tags = append(tags, fmt.Sprintf("%s (%s)", r, bundle.TagKind(r)))
		}
		var labels []string
		for _, k := range ociLabels {
			if v := img.Labels[k]; v != "" {
				labels = append(labels, strings.TrimPrefix(k, "org.opencontainers.image.")+"="+v)
			}
		}
		e, _ := m.Entry(img.Entry)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", img.ID, strings.Join(tags, ", "), strings.Join(img.Services, ","),
			bundle.HumanBytes(e.Size), img.Platform, strings.Join(labels, " "))
	}
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ENTRY\tKIND\tSIZE\tSHA256")
	for _, e := range m.Entries {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", e.Name, e.Kind, bundle.HumanBytes(e.Size), e.SHA256)
	}
	tw.Flush()
}

func newBundleExtractCmd(g *globals) *cobra.Command {
	var tf trustFlags
	var out string
	var what []string
	var quiet, asJSON bool
	cmd := &cobra.Command{
		Use:   "extract FILE -o DIR",
		Short: "Verify a bundle and extract its files (Compose files, env templates, outpost, install.sh)",
		Long: `Verify the whole bundle, then write the chosen files into DIR (app/ and bin/,
plus the manifest and signature, and bin/outpost.sha256 for install.sh).
Nothing appears in DIR unless every entry verified.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			tr, err := tf.trust()
			if err != nil {
				return err
			}
			var kinds []bundle.Kind
			for _, w := range what {
				kinds = append(kinds, bundle.Kind(w))
			}
			res, err := bundle.Extract(cmd.Context(), args[0], bundle.ExtractOptions{Trust: tr, Dir: out, Kinds: kinds, Progress: g.progress(quiet || asJSON), Log: g.log})
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(g.streams.Out, res)
			}
			fmt.Fprintf(g.streams.Out, "extracted %s into %s\n", nameVersion(res.Manifest), res.Dir)
			return nil
		},
	}
	tf.register(cmd)
	cmd.Flags().StringVarP(&out, "output", "o", "", "directory to extract into (must not exist or be empty; required)")
	cmd.Flags().StringSliceVar(&what, "what", []string{"compose", "env", "outpost", "installer"}, "kinds to extract: compose, env, outpost, installer")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "no progress output")
	_ = cmd.MarkFlagRequired("output")
	return cmd
}

func newBundleKeygenCmd(g *globals) *cobra.Command {
	var prefix string
	cmd := &cobra.Command{
		Use:   "keygen -o NAME",
		Short: "Make an ed25519 signing key pair: NAME.key (keep secret) and NAME.pub (ship to customers)",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			id, err := bundle.WriteKeyPair(prefix)
			if err != nil {
				return err
			}
			fmt.Fprintf(g.streams.Out, "wrote %s.key (private, mode 0600) and %s.pub (public)\nkey ID %s\n", prefix, prefix, id)
			return nil
		},
	}
	cmd.Flags().StringVarP(&prefix, "output", "o", "outpost-bundle", "file name prefix")
	return cmd
}

// upBundleFlags are the --bundle and --pubkey flags of `outpost up` and
// `outpost upgrade`.
type upBundleFlags struct {
	file  string
	trust trustFlags
}

func (u *upBundleFlags) register(cmd *cobra.Command, usage string) {
	cmd.Flags().StringVar(&u.file, "bundle", "", usage)
	u.trust.register(cmd)
}

// bundleUse says how prepare treats the bundle.
type bundleUse struct {
	// verifyFirst imports no image until the whole bundle has verified.
	verifyFirst bool
	// dryRun verifies the bundle and extracts its files, loading no image.
	dryRun bool
	// check runs once the signature is verified, before anything
	// changes; it receives the appliance the bundle's definition names
	// (--name overrides the bundle's).
	check func(ctx context.Context, env *daemon.Env, appliance string) error
}

// prepared is what prepare made of a bundle: how to pin a definition
// loaded from it, and (dry run) the image IDs it carries that are not
// loaded.
type prepared struct {
	pin     func(*model.Appliance)
	pending []string
}

// prepare runs openBundle when --bundle is given; without it, it does
// nothing.
func (u *upBundleFlags) prepare(ctx context.Context, g *globals, def *defOptions, use bundleUse) (*prepared, error) {
	if u.file == "" {
		if len(u.trust.pubkeys) > 0 {
			return nil, errors.New("--pubkey needs --bundle")
		}
		return &prepared{pin: func(*model.Appliance) {}}, nil
	}
	return openBundle(ctx, g, def, u.file, &u.trust, use)
}

// openBundle prepares `outpost up --bundle FILE` and `outpost upgrade
// --bundle FILE`: it checks the bundle's signature (and use.check), then
// verifies the whole bundle while loading its images (none with
// use.dryRun), extracts its Compose and env files under the state
// directory, and points the definition flags at them (the bundle's
// Compose files first, then any -f given as overrides; the bundle's env
// files unless --env-file is given). A definition loaded from them is
// pinned to the bundle's image IDs.
func openBundle(ctx context.Context, g *globals, def *defOptions, file string, tf *trustFlags, use bundleUse) (*prepared, error) {
	tr, err := tf.trust()
	if err != nil {
		return nil, err
	}
	head, err := bundle.Inspect(file, bundle.InspectOptions{Trust: tr})
	if err != nil {
		return nil, err
	}
	p, err := g.paths()
	if err != nil {
		return nil, err
	}
	raw, err := head.Manifest.Marshal()
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(raw)
	dir := filepath.Join(p.StateDir, "bundles", head.Manifest.Appliance, hex.EncodeToString(sum[:8]))
	env, err := daemon.Open(ctx, p, g.log)
	if err != nil {
		return nil, err
	}
	defer env.Close()
	if use.check != nil {
		name := def.name
		if name == "" {
			name = head.Manifest.Appliance
		}
		if err := use.check(ctx, env, name); err != nil {
			return nil, fmt.Errorf("bundle %s: %w", file, err)
		}
	}
	var files *bundle.ExtractResult
	var pending []string
	if use.dryRun {
		files, err = bundle.Extract(ctx, file, bundle.ExtractOptions{Trust: tr, Dir: dir, Progress: g.progress(false), Log: g.log})
		if err != nil {
			return nil, err
		}
		for _, img := range files.Manifest.Images {
			if _, err := env.Engine.ImageInspect(ctx, img.ID); err != nil {
				pending = append(pending, img.ID)
			}
		}
		fmt.Fprintf(g.streams.Err, "%s: verified (signed by %s); dry run: %d image(s) not loaded\n", nameVersion(files.Manifest), files.KeyID, len(pending))
	} else {
		res, err := bundle.Load(ctx, file, bundle.LoadOptions{Trust: tr, Engine: env.Engine, ExtractDir: dir, VerifyFirst: use.verifyFirst, Progress: g.progress(false), Log: g.log})
		if err != nil {
			return nil, err
		}
		printLoad(g.streams.Err, res)
		files = &res.ExtractResult
	}
	def.files = append(append([]string(nil), files.ComposeFiles...), def.files...)
	if len(def.envFiles) == 0 {
		def.envFiles = files.EnvFiles
	}
	m := files.Manifest
	return &prepared{pin: func(app *model.Appliance) { pinImages(app, m) }, pending: pending}, nil
}

// pinImages makes every service whose image the bundle carries run that
// image by ID, never by a tag that could move.
func pinImages(app *model.Appliance, m *bundle.Manifest) {
	if m == nil {
		return
	}
	for _, svc := range app.Services {
		if img, ok := m.ImageByRef(svc.Image); ok {
			svc.Image = img.ID
		}
	}
}
