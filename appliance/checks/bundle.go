package checks

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/outpostdev/outpost/appliance/bundle"
)

// bundleImage returns the use an image entry of the bundle provides: one
// of its references, or one of its services, is the use's.
func bundleImage(m *bundle.Manifest, entry string, uses []imageUse) (imageUse, bool) {
	for _, img := range m.Images {
		if img.Entry != entry {
			continue
		}
		for _, u := range uses {
			for _, r := range img.Refs {
				if normalizeRef(r) == normalizeRef(u.ref) {
					return u, true
				}
			}
			for _, s := range img.Services {
				for _, us := range u.services {
					if us.Name == s {
						return u, true
					}
				}
			}
		}
	}
	return imageUse{}, false
}

// openBundle opens a bundle for looking: its signature is not checked,
// since nothing read from it is acted on.
func openBundle(path string) (*bundle.Reader, *os.File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("opening bundle: %w", err)
	}
	r, err := bundle.NewReader(f, bundle.ReaderOptions{SkipSignature: true})
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("reading bundle %s: %w", path, err)
	}
	return r, f, nil
}

// bundleRefs reports which uses' images the bundle holds, from its
// manifest alone.
func bundleRefs(path string, uses []imageUse) (map[string]bool, error) {
	r, f, err := openBundle(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	defer r.Close()
	out := map[string]bool{}
	for _, img := range r.Manifest().Images {
		if u, ok := bundleImage(r.Manifest(), img.Entry, uses); ok {
			out[u.ref] = true
		}
	}
	return out, nil
}

// readBundleImages streams the bundle once and calls fn with each image
// entry one of the uses needs, while the entry is being read.
func readBundleImages(ctx context.Context, path string, uses []imageUse, fn func(imageUse, io.Reader)) error {
	r, f, err := openBundle(path)
	if err != nil {
		return err
	}
	defer f.Close()
	defer r.Close()
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		e, err := r.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading bundle %s: %w", path, err)
		}
		if e.Entry.Kind != bundle.KindImage {
			continue
		}
		if u, ok := bundleImage(r.Manifest(), e.Entry.Name, uses); ok {
			fn(u, e)
		}
	}
}
