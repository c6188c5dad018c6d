package export

import (
	"fmt"
	"slices"

	"github.com/outpostdev/outpost/appliance/model"
)

// noter collects the notes of one export.
type noter struct {
	notes []Note
}

func (n *noter) note(where, format string, args ...any) {
	n.notes = append(n.notes, Note{Where: where, What: fmt.Sprintf(format, args...)})
}

// proxyNote says what becomes of the embedded proxy; instead says what to
// put in front of the services when no replaced proxy service is written.
func (n *noter) proxyNote(app *model.Appliance, instead string) {
	switch p := app.Proxy; {
	case p == nil:
	case p.Replaced == nil:
		n.note("x-outpost.proxy", "the embedded proxy is not exported (it is part of `outpost run`); %s in front of the services it routes to (`outpost proxy routes` lists them)", instead)
	default:
		n.note("x-outpost.proxy", "the embedded proxy is not exported; service %s, which it replaces under Outpost, is written as the Compose file defines it, without Outpost's health gating, maintenance page or local CA", p.Replaced.Name)
	}
}

// markersWithoutHealthcheck notes ready markers no healthcheck carries.
func (n *noter) markersWithoutHealthcheck(svc *model.Service, where string) {
	if len(svc.ReadyMarkers) > 0 {
		n.note(where, "ready_markers without a healthcheck are not exported; add a healthcheck that tests them")
	}
}

// secretEnvs maps the environment variable of each secret svc lists to the
// secret's name.
func secretEnvs(app *model.Appliance, svc *model.Service, where string) (map[string]string, error) {
	out := map[string]string{}
	for _, sn := range svc.Secrets {
		i := slices.IndexFunc(app.Secrets, func(s *model.Secret) bool { return s.Name == sn })
		if i < 0 {
			return nil, fmt.Errorf("%s.secrets: %s is not declared in x-outpost.secrets", where, sn)
		}
		out[app.Secrets[i].Env] = sn
	}
	return out, nil
}

// jobService is the service whose image, environment and mounts job j uses.
func jobService(app *model.Appliance, j *model.Job) (*model.Service, error) {
	svc, ok := app.Services[j.Service]
	if !ok {
		return nil, fmt.Errorf("x-outpost.jobs.%s.service: %s is not a service of the appliance", j.Name, j.Service)
	}
	return svc, nil
}
