package backup

import (
	"encoding/json"
	"fmt"
	"slices"

	"github.com/outpostdev/outpost/appliance/model"
)

// ChangesData reports why moving an appliance from definition from to
// definition to can change its data, so an upgrade knows it must take a
// snapshot first (Backup with Trigger TriggerUpgrade) and refuse to go on
// when that fails. It returns nil when the change cannot touch data. A
// change can touch data when:
//   - a stateful service that mounts a volume gets another image or
//     configuration (it is replaced in place and may migrate its data),
//   - a job runs during the upgrade (when: upgrade or always),
//   - a volume migration is declared,
//   - a service mounts a volume it did not mount before, or read-write
//     where it was read-only.
func ChangesData(from, to *model.Appliance) []string {
	var reasons []string
	for _, name := range to.ServiceNames() {
		svc := to.Services[name]
		if !writesVolume(svc) {
			continue
		}
		old := from.Services[name]
		if old == nil {
			reasons = append(reasons, fmt.Sprintf("service %s is new and writes to a volume", name))
			continue
		}
		if svc.Role != model.RoleRotatable && !sameService(old, svc) {
			reasons = append(reasons, fmt.Sprintf("stateful service %s changes (%s) and writes to a volume", name, what(old, svc)))
			continue
		}
		for _, m := range svc.Mounts {
			if m.Type == model.MountVolume && !m.ReadOnly && !mountsRW(old, m.Source) {
				reasons = append(reasons, fmt.Sprintf("service %s now writes to volume %s", name, m.Source))
			}
		}
	}
	for _, j := range to.Jobs {
		if j.When == model.JobUpgrade || j.When == model.JobAlways {
			reasons = append(reasons, fmt.Sprintf("job %s runs during the upgrade", j.Name))
		}
	}
	for _, mg := range to.VolumeMigrations {
		reasons = append(reasons, fmt.Sprintf("volume %s is migrated into %s", mg.From, mg.To))
	}
	return reasons
}

func writesVolume(s *model.Service) bool {
	for _, m := range s.Mounts {
		if m.Type == model.MountVolume && !m.ReadOnly {
			return true
		}
	}
	return false
}

func mountsRW(s *model.Service, key string) bool {
	return slices.ContainsFunc(s.Mounts, func(m model.Mount) bool {
		return m.Type == model.MountVolume && m.Source == key && !m.ReadOnly
	})
}

func sameService(a, b *model.Service) bool {
	ja, err1 := json.Marshal(a)
	jb, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && string(ja) == string(jb)
}

func what(a, b *model.Service) string {
	if a.Image != b.Image {
		return fmt.Sprintf("image %s → %s", a.Image, b.Image)
	}
	return "configuration"
}
