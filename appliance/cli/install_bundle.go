package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/outpostdev/outpost/appliance/bundle"
	"github.com/outpostdev/outpost/appliance/service"
)

// installBundle is a bundle `outpost install --bundle` verified and
// extracted, before anything on the host changed.
type installBundle struct {
	file string
	// tmp holds the extracted Compose and env files until install has
	// copied them into the config directory.
	tmp string
	res *bundle.ExtractResult
	// signer is the trusted key that signed the bundle.
	signer []byte
}

// openInstallBundle verifies the whole bundle — signature, every entry's
// size and checksum — while extracting its Compose and env files into a
// temporary directory, and points the definition flags at them: the
// bundle's Compose files first, then -f files as overrides; the bundle's
// env files unless --env-file is given. Nothing outside the temporary
// directory is written, so a refused bundle leaves the host as it was.
func openInstallBundle(ctx context.Context, g *globals, o *installOptions) (*installBundle, error) {
	tr, err := o.trust.trust()
	if err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp("", "outpost-install-bundle-")
	if err != nil {
		return nil, fmt.Errorf("creating a directory for the bundle's files: %w (set TMPDIR)", err)
	}
	fmt.Fprintf(g.streams.Err, "install: verifying %s (signature and every entry) before changing anything\n", o.bundle)
	res, err := bundle.Extract(ctx, o.bundle, bundle.ExtractOptions{Trust: tr, Dir: filepath.Join(tmp, "bundle"), Progress: g.progress(false), Log: g.log})
	if err != nil {
		os.RemoveAll(tmp)
		return nil, fmt.Errorf("%w; nothing was installed", err)
	}
	if len(res.ComposeFiles) == 0 {
		os.RemoveAll(tmp)
		return nil, fmt.Errorf("bundle %s carries no Compose file; nothing was installed", o.bundle)
	}
	key, ok := tr.Key(res.KeyID)
	if !ok {
		os.RemoveAll(tmp)
		return nil, fmt.Errorf("bundle %s: its signing key %s is not among the trusted keys", o.bundle, res.KeyID)
	}
	pem, err := bundle.EncodePublicKey(key)
	if err != nil {
		os.RemoveAll(tmp)
		return nil, err
	}
	fmt.Fprintf(g.streams.Err, "install: bundle %s %s verified (signed by %s, %d images)\n", res.Manifest.Appliance, res.Manifest.Version, res.KeyID, len(res.Manifest.Images))
	o.def.files = append(append([]string(nil), res.ComposeFiles...), o.def.files...)
	if len(o.def.envFiles) == 0 {
		o.def.envFiles = res.EnvFiles
	}
	return &installBundle{file: o.bundle, tmp: tmp, res: res, signer: pem}, nil
}

func (b *installBundle) cleanup() { os.RemoveAll(b.tmp) }

// keyFile writes the signing key into the appliance's config directory
// (bundle-keys/, readable by the service user's group), where the helper
// that loads the images as the service user — and later upgrades — find it.
func (b *installBundle) keyFile(lay service.Layout, gid int) (string, error) {
	dir := filepath.Join(lay.ConfigDir, "bundle-keys")
	if err := service.MkdirOwned(dir, 0o750, 0, gid); err != nil {
		return "", err
	}
	p := filepath.Join(dir, strings.ReplaceAll(b.res.KeyID, ":", "-")+".pub")
	if _, err := service.WriteFileOwned(p, b.signer, 0o640, 0, gid); err != nil {
		return "", fmt.Errorf("storing the bundle's signing key: %w", err)
	}
	return p, nil
}

// loadImages streams the bundle through `outpost bundle load` run as the
// service user, into that user's image storage: every byte is verified
// again as it is read (the file could have changed since), images already
// present are skipped, and a failure removes what this load imported.
func (b *installBundle) loadImages(helper func(stdin io.Reader, args ...string) error, keyFile string) error {
	f, err := os.Open(b.file)
	if err != nil {
		return fmt.Errorf("opening bundle: %w", err)
	}
	defer f.Close()
	// A pipe, not the file: the service user need not be able to open it.
	if err := helper(struct{ io.Reader }{f}, "bundle", "load", bundle.Stdin, "--pubkey", keyFile, "--quiet"); err != nil {
		return fmt.Errorf("loading the bundle's images: %w", err)
	}
	return nil
}
