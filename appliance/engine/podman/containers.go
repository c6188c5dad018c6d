package podman

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/containers/podman/v5/libpod/define"
	"github.com/containers/podman/v5/pkg/bindings/containers"
	"github.com/containers/podman/v5/pkg/copy"
	"github.com/containers/podman/v5/pkg/domain/entities/types"

	"github.com/outpostdev/outpost/appliance/engine"
)

// CreateContainer creates (does not start) a container and returns its ID.
//
// On rootless cgroups v1 hosts (Info: Rootless && !CgroupsV2) memory and
// pids limits cannot be applied: they are dropped with a logged warning
// rather than failing, since the host cannot enforce them either way. Any
// ulimit above the host's hard limit is an error; when the spec sets any
// ulimit, nofile and nproc are set too (see DefaultNofile, DefaultNproc).
// "host-gateway" in ExtraHosts becomes the host's primary IPv4 address on
// Podman before 4.7 (see hostGatewayIP); later Podman resolves it itself. A
// port with HostPort 0 is not published.
func (e *Engine) CreateContainer(ctx context.Context, s engine.ContainerSpec) (string, error) {
	g, warnings, err := buildSpec(s, specEnv{
		limitsSupported: e.ResourceLimitsSupported(),
		hardLimit:       e.hardLimit,
		hostGateway:     e.resolveHostGateway,
	})
	if err != nil {
		return "", fmt.Errorf("creating container %s: %w", s.Name, err)
	}
	for _, w := range warnings {
		e.logger.Warn("container setting dropped", "container", s.Name, "reason", w)
	}
	resp, err := containers.CreateWithSpec(e.callCtx(ctx), g, nil)
	if err != nil {
		return "", apiErr("creating container "+s.Name, err)
	}
	return resp.ID, nil
}

func (e *Engine) resolveHostGateway() (string, error) {
	if e.serviceAtLeast(4, 7) {
		return hostGatewayToken, nil
	}
	return e.hostGateway()
}

// StartContainer starts a created or stopped container. Before it, stale
// aardvark-dns entries left by containers whose network teardown never ran
// are removed (see pruneStaleDNS); after it, with netavark before 1.9, the
// MAC addresses of its bridges are pinned (see pinBridges).
func (e *Engine) StartContainer(ctx context.Context, id string) error {
	e.pruneStaleDNS(ctx)
	if err := containers.Start(e.callCtx(ctx), id, nil); err != nil {
		return apiErr("starting container "+id, err)
	}
	if e.bridgePin {
		e.pinBridges(ctx, id)
	}
	return nil
}

// StopContainer sends the stop signal, waits up to timeout (rounded up to
// whole seconds, Podman's unit), then kills. Stopping a stopped container is
// not an error.
func (e *Engine) StopContainer(ctx context.Context, id string, timeout time.Duration) error {
	secs := uint(0)
	if timeout > 0 {
		secs = uint((timeout + time.Second - 1) / time.Second)
	}
	if err := containers.Stop(e.callCtx(ctx), id, new(containers.StopOptions).WithTimeout(secs)); err != nil {
		return apiErr("stopping container "+id, err)
	}
	return nil
}

// RemoveContainer removes a container, killing it if it runs. It never
// removes volumes.
func (e *Engine) RemoveContainer(ctx context.Context, id string) error {
	opts := new(containers.RemoveOptions).WithForce(true).WithVolumes(false).WithTimeout(0)
	reports, err := containers.Remove(e.callCtx(ctx), id, opts)
	if err != nil {
		return apiErr("removing container "+id, err)
	}
	for _, r := range reports {
		if r != nil && r.Err != nil {
			return apiErr("removing container "+id, r.Err)
		}
	}
	return nil
}

// InspectContainer returns a container's state; engine.ErrNotFound when it
// does not exist.
func (e *Engine) InspectContainer(ctx context.Context, id string) (engine.ContainerInfo, error) {
	data, err := containers.Inspect(e.callCtx(ctx), id, nil)
	if err != nil {
		return engine.ContainerInfo{}, apiErr("inspecting container "+id, err)
	}
	return inspectToInfo(data), nil
}

func inspectToInfo(d *define.InspectContainerData) engine.ContainerInfo {
	info := engine.ContainerInfo{
		ID:        d.ID,
		Name:      d.Name,
		Image:     d.ImageName,
		ImageID:   d.Image,
		CreatedAt: d.Created,
	}
	if st := d.State; st != nil {
		info.State = st.Status
		info.Running = st.Running
		info.ExitCode = int(st.ExitCode)
		info.OOMKilled = st.OOMKilled
		info.StartedAt = st.StartedAt
		info.FinishedAt = st.FinishedAt
	}
	if d.Config != nil {
		info.Labels = d.Config.Labels
	}
	if d.HostConfig != nil {
		for key, binds := range d.HostConfig.PortBindings {
			portStr, proto, _ := strings.Cut(key, "/")
			cport, err := strconv.ParseUint(portStr, 10, 16)
			if err != nil {
				continue
			}
			for _, b := range binds {
				hport, err := strconv.ParseUint(b.HostPort, 10, 16)
				if err != nil {
					continue
				}
				info.Ports = append(info.Ports, engine.PortSpec{
					HostIP:        b.HostIP,
					HostPort:      uint16(hport),
					ContainerPort: uint16(cport),
					Protocol:      proto,
				})
			}
		}
	}
	return info
}

// ListContainers lists all containers, running or not, carrying all the
// given labels.
func (e *Engine) ListContainers(ctx context.Context, labels map[string]string) ([]engine.ContainerInfo, error) {
	opts := new(containers.ListOptions).WithAll(true)
	if f := labelFilters(labels); f != nil {
		opts = opts.WithFilters(f)
	}
	list, err := containers.List(e.callCtx(ctx), opts)
	if err != nil {
		return nil, apiErr("listing containers", err)
	}
	out := make([]engine.ContainerInfo, 0, len(list))
	for _, c := range list {
		if !matchLabels(c.Labels, labels) {
			continue
		}
		out = append(out, listToInfo(c))
	}
	return out, nil
}

func listToInfo(c types.ListContainer) engine.ContainerInfo {
	info := engine.ContainerInfo{
		ID:        c.ID,
		Image:     c.Image,
		ImageID:   c.ImageID,
		State:     c.State,
		Running:   c.State == "running",
		ExitCode:  int(c.ExitCode),
		CreatedAt: c.Created,
		Labels:    c.Labels,
	}
	if len(c.Names) > 0 {
		info.Name = c.Names[0]
	}
	if c.StartedAt > 0 {
		info.StartedAt = time.Unix(c.StartedAt, 0)
	}
	if c.ExitedAt > 0 {
		info.FinishedAt = time.Unix(c.ExitedAt, 0)
	}
	for _, p := range c.Ports {
		n := max(p.Range, 1)
		for i := range n {
			info.Ports = append(info.Ports, engine.PortSpec{
				HostIP:        p.HostIP,
				HostPort:      p.HostPort + i,
				ContainerPort: p.ContainerPort + i,
				Protocol:      p.Protocol,
			})
		}
	}
	return info
}

// PathExists reports whether path exists inside a container's filesystem,
// running or not, through Podman's archive API (no shell needed in the
// image); engine.ErrNotFound when the container does not exist.
func (e *Engine) PathExists(ctx context.Context, id, path string) (bool, error) {
	cctx := e.callCtx(ctx)
	_, err := containers.Stat(cctx, id, path)
	if err == nil {
		return true, nil
	}
	if !errors.Is(err, copy.ErrENOENT) {
		return false, apiErr(fmt.Sprintf("checking %s in container %s", path, id), err)
	}
	// The API answers 404 both for a missing path and a missing container.
	exists, xerr := containers.Exists(cctx, id, nil)
	if xerr != nil {
		return false, apiErr("checking container "+id, xerr)
	}
	if !exists {
		return false, fmt.Errorf("checking %s in container %s: %w", path, id, engine.ErrNotFound)
	}
	return false, nil
}
