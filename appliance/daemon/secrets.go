package daemon

import (
	"github.com/outpostdev/outpost/appliance/model"
	"github.com/outpostdev/outpost/appliance/secrets"
)

// WithSecrets returns app with the values of its x-outpost secrets injected
// as environment variables into the services that list them. Values live in
// 0600 files below the state directory (secrets.Dir); one that has none yet
// is generated now, once — `outpost install` generates them ahead, as the
// service user. app itself is not modified.
func (e *Env) WithSecrets(app *model.Appliance) (*model.Appliance, error) {
	return secrets.Apply(secrets.Dir(e.Paths.StateDir, app.Name), app)
}
