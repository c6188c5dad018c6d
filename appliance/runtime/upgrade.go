package runtime

import (
	"context"

	"github.com/outpostdev/outpost/appliance/engine"
	"github.com/outpostdev/outpost/appliance/model"
)

// ServiceSpec returns the container spec Up would create for svc at
// revision rev — the Compose translation plus what the proxy needs
// (published upstream ports, host aliases, the CA mount) — with its
// config-hash label set. Upgrades use it to start a second copy of a
// rotatable service beside the running one (after renaming it and moving
// its published ports).
func (r *Runtime) ServiceSpec(ctx context.Context, app *model.Appliance, svc *model.Service, rev int64, imageID string) (engine.ContainerSpec, error) {
	spec := ContainerSpec(app, svc, rev, nil)
	if err := r.applyProxyNeeds(ctx, app, svc, &spec); err != nil {
		return engine.ContainerSpec{}, err
	}
	spec.Labels[engine.LabelConfigHash] = ConfigHash(spec, imageID)
	return spec, nil
}

// PickProxyPort picks a free loopback port in the range the proxy's
// upstream ports are allocated from, avoiding taken ones; for
// store.AllocatePort.
func PickProxyPort(taken map[uint16]bool) (uint16, error) { return pickProxyPort(taken) }
