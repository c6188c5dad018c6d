package compose

import (
	"context"
	"strings"
	"testing"
	"time"
)

func TestBackupPolicy(t *testing.T) {
	doc := []byte(`
services:
  db:
    image: pg
x-outpost:
  backup:
    schedule: "@daily"
    keep_last: 7
    keep_within: 14d
    dir: /srv/backups
    quiesce: stop
`)
	a, _, err := LoadBytes(context.Background(), "compose.yml", doc, Options{ProjectName: "shop"})
	if err != nil {
		t.Fatal(err)
	}
	p := a.Backup
	if p == nil || p.Schedule != 24*time.Hour || p.KeepLast != 7 || p.KeepWithin != 14*24*time.Hour || p.Dir != "/srv/backups" || p.Quiesce != "stop" {
		t.Errorf("policy = %+v", p)
	}

	bad := []byte(`
services:
  db:
    image: pg
x-outpost:
  backup:
    schedule: sometimes
    keep_last: 0
    keep_within: -3d
    dir: relative/dir
    quiesce: freeze
    keep: 3
`)
	_, _, err = LoadBytes(context.Background(), "compose.yml", bad, Options{ProjectName: "shop"})
	if err == nil {
		t.Fatal("invalid backup policy accepted")
	}
	for _, want := range []string{"backup.schedule", "backup.keep_last", "backup.keep_within", "backup.dir", "backup.quiesce", "backup.keep"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %s:\n%v", want, err)
		}
	}
}
