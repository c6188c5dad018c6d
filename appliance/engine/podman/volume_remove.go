package podman

import (
	"context"

	"github.com/containers/podman/v5/pkg/bindings/volumes"
)

// RemoveVolume deletes a volume and its data; engine.ErrNotFound when it
// does not exist. It is not part of engine.Engine on purpose: only an
// explicit, confirmed operator action (`outpost uninstall --purge`) may
// delete a volume, and that caller asserts this method. It fails while a
// container uses the volume.
func (e *Engine) RemoveVolume(ctx context.Context, name string) error {
	return apiErr("removing volume "+name, volumes.Remove(e.callCtx(ctx), name, nil))
}
