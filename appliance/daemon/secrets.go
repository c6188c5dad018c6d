package daemon

import (
	"github.com/outpostdev/outpost/appliance/model"
)

// WithSecrets returns app with the values of its x-outpost secrets injected
// as environment variables into the services that list them. Values live in
// 0600 files below the state directory (secrets.Dir); one that has none yet
// is generated now, once — `outpost install` generates them ahead, as the
// service user. app itself is not modified. The state database never gets
// the values: revisions record markers (runtime.SpecHash).
func (e *Env) WithSecrets(app *model.Appliance) (*model.Appliance, error) {
	return e.Runtime.WithSecrets(app)
}
