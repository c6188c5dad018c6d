package podman

import (
	"context"
	"fmt"
	"io"

	"github.com/containers/podman/v5/pkg/bindings/images"
	"github.com/containers/podman/v5/pkg/bindings/network"
	"github.com/containers/podman/v5/pkg/bindings/volumes"
	entitiesTypes "github.com/containers/podman/v5/pkg/domain/entities/types"
	nettypes "go.podman.io/common/libnetwork/types"

	"github.com/outpostdev/outpost/appliance/engine"
)

// EnsureNetwork creates a bridge network with DNS between its containers if
// no network of that name exists. An existing network is left as it is.
func (e *Engine) EnsureNetwork(ctx context.Context, n engine.NetworkSpec) error {
	cctx := e.callCtx(ctx)
	exists, err := network.Exists(cctx, n.Name, nil)
	if err != nil {
		return apiErr("checking network "+n.Name, err)
	}
	if exists {
		return nil
	}
	_, err = network.Create(cctx, &nettypes.Network{
		Name:       n.Name,
		Driver:     "bridge",
		DNSEnabled: true,
		Internal:   n.Internal,
		Labels:     n.Labels,
	})
	if err != nil {
		// Lost a race with another creator: fine.
		if exists, xerr := network.Exists(cctx, n.Name, nil); xerr == nil && exists {
			return nil
		}
		return apiErr("creating network "+n.Name, err)
	}
	return nil
}

// RemoveNetwork removes a network; engine.ErrNotFound when absent. It fails
// while containers are attached.
func (e *Engine) RemoveNetwork(ctx context.Context, name string) error {
	reports, err := network.Remove(e.callCtx(ctx), name, nil)
	if err != nil {
		return apiErr("removing network "+name, err)
	}
	for _, r := range reports {
		if r != nil && r.Err != nil {
			return apiErr("removing network "+name, r.Err)
		}
	}
	return nil
}

// ListNetworks lists the names of networks carrying all the given labels.
func (e *Engine) ListNetworks(ctx context.Context, labels map[string]string) ([]string, error) {
	opts := new(network.ListOptions)
	if f := labelFilters(labels); f != nil {
		opts = opts.WithFilters(f)
	}
	nets, err := network.List(e.callCtx(ctx), opts)
	if err != nil {
		return nil, apiErr("listing networks", err)
	}
	var out []string
	for _, n := range nets {
		if matchLabels(n.Labels, labels) {
			out = append(out, n.Name)
		}
	}
	return out, nil
}

// EnsureVolume creates the volume if it does not exist and reports whether
// it did.
func (e *Engine) EnsureVolume(ctx context.Context, v engine.VolumeSpec) (bool, error) {
	cctx := e.callCtx(ctx)
	exists, err := volumes.Exists(cctx, v.Name, nil)
	if err != nil {
		return false, apiErr("checking volume "+v.Name, err)
	}
	if exists {
		return false, nil
	}
	_, err = volumes.Create(cctx, entitiesTypes.VolumeCreateOptions{Name: v.Name, Labels: v.Labels, Label: v.Labels}, nil)
	if err != nil {
		if exists, xerr := volumes.Exists(cctx, v.Name, nil); xerr == nil && exists {
			return false, nil
		}
		return false, apiErr("creating volume "+v.Name, err)
	}
	return true, nil
}

// ListVolumes lists volumes carrying all the given labels.
func (e *Engine) ListVolumes(ctx context.Context, labels map[string]string) ([]engine.VolumeInfo, error) {
	opts := new(volumes.ListOptions)
	if f := labelFilters(labels); f != nil {
		opts = opts.WithFilters(f)
	}
	vols, err := volumes.List(e.callCtx(ctx), opts)
	if err != nil {
		return nil, apiErr("listing volumes", err)
	}
	var out []engine.VolumeInfo
	for _, v := range vols {
		if v == nil || !matchLabels(v.Labels, labels) {
			continue
		}
		out = append(out, engine.VolumeInfo{
			Name:       v.Name,
			Mountpoint: v.Mountpoint,
			Labels:     v.Labels,
			CreatedAt:  v.CreatedAt,
		})
	}
	return out, nil
}

// ImageInspect returns an image's facts; engine.ErrNotFound when absent.
func (e *Engine) ImageInspect(ctx context.Context, ref string) (engine.ImageInfo, error) {
	rep, err := images.GetImage(e.callCtx(ctx), ref, nil)
	if err != nil {
		return engine.ImageInfo{}, apiErr("inspecting image "+ref, err)
	}
	if rep == nil || rep.ImageData == nil {
		return engine.ImageInfo{}, fmt.Errorf("inspecting image %s: empty answer", ref)
	}
	d := rep.ImageData
	info := engine.ImageInfo{
		ID:     d.ID,
		Digest: string(d.Digest),
		Names:  d.RepoTags,
		Size:   d.Size,
		Labels: d.Labels,
	}
	if d.Config != nil {
		info.User = d.Config.User
		info.Env = d.Config.Env
		if len(d.Config.Labels) > 0 {
			info.Labels = d.Config.Labels
		}
	}
	if hc := d.HealthCheck; hc != nil && len(hc.Test) > 0 && hc.Test[0] != "NONE" {
		info.Healthcheck = hc.Test
	}
	return info, nil
}

// LoadImage loads a docker-archive or oci-archive tar stream and returns the
// names it loaded.
func (e *Engine) LoadImage(ctx context.Context, r io.Reader) ([]string, error) {
	rep, err := images.Load(e.callCtx(ctx), r)
	if err != nil {
		return nil, apiErr("loading image archive", err)
	}
	return rep.Names, nil
}
