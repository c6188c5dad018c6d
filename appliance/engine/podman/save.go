package podman

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/containers/podman/v5/pkg/bindings/images"
	"github.com/containers/podman/v5/pkg/bindings/system"

	"github.com/outpostdev/outpost/appliance/engine"
)

// SaveImage writes ref to w as a docker-archive (uncompressed layers), the
// format `podman save` writes by default and LoadImage reads.
func (e *Engine) SaveImage(ctx context.Context, ref string, w io.Writer) error {
	opts := new(images.ExportOptions).WithFormat("docker-archive")
	if err := images.Export(e.callCtx(ctx), []string{ref}, w, opts); err != nil {
		return apiErr("saving image "+ref, err)
	}
	return nil
}

// TagImage names the image id ref. ref must be "repository:tag" (a digest
// reference cannot be given to an image).
func (e *Engine) TagImage(ctx context.Context, id, ref string) error {
	repo, tag, err := splitTag(ref)
	if err != nil {
		return err
	}
	if err := images.Tag(e.callCtx(ctx), id, tag, repo, nil); err != nil {
		return apiErr(fmt.Sprintf("tagging image %s as %s", id, ref), err)
	}
	return nil
}

// splitTag splits "repo:tag" at the tag's colon (not a registry port's);
// a reference without a tag gets "latest", as Podman does.
func splitTag(ref string) (repo, tag string, err error) {
	if strings.Contains(ref, "@") {
		return "", "", fmt.Errorf("tagging as %s: a digest reference cannot be assigned; use repository:tag", ref)
	}
	slash := strings.LastIndex(ref, "/")
	if colon := strings.LastIndex(ref, ":"); colon > slash {
		return ref[:colon], ref[colon+1:], nil
	}
	return ref, "latest", nil
}

// RemoveImage removes the image id with all its names. It is not forced:
// an image a container uses stays, and the error says so. Podman refuses
// to remove by ID an image that has several names, so the names are
// removed (the last one takes the image with it).
func (e *Engine) RemoveImage(ctx context.Context, id string) error {
	info, err := e.ImageInspect(ctx, id)
	if err != nil {
		return err
	}
	refs := info.Names
	if len(refs) == 0 {
		refs = []string{id}
	}
	if _, errs := images.Remove(e.callCtx(ctx), refs, nil); len(errs) > 0 {
		return apiErr("removing image "+id, errors.Join(errs...))
	}
	if _, err := e.ImageInspect(ctx, id); err == nil {
		if _, errs := images.Remove(e.callCtx(ctx), []string{id}, nil); len(errs) > 0 {
			return apiErr("removing image "+id, errors.Join(errs...))
		}
	}
	return nil
}

// ImageStore reports the service's graph root, blob staging directory and
// the graph root's free space as the service sees it.
func (e *Engine) ImageStore(ctx context.Context) (engine.ImageStoreInfo, error) {
	info, err := system.Info(e.callCtx(ctx), nil)
	if err != nil {
		return engine.ImageStoreInfo{}, fmt.Errorf("reading podman storage info: %w", err)
	}
	var out engine.ImageStoreInfo
	if info.Store != nil {
		out.GraphRoot = info.Store.GraphRoot
		out.CopyTmpDir = info.Store.ImageCopyTmpDir
		if info.Store.GraphRootAllocated > info.Store.GraphRootUsed {
			out.Free = info.Store.GraphRootAllocated - info.Store.GraphRootUsed
		}
	}
	return out, nil
}
