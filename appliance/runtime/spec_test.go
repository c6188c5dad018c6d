package runtime

import (
	"testing"

	"github.com/outpostdev/outpost/appliance/store"
)

func TestRevisionChange(t *testing.T) {
	active := store.Revision{SpecHash: "aaaaaaaaaaaaaaaaaaaa", Status: store.RevisionActive, Images: map[string]string{"api": "sha256:111111111111111111", "db": "sha256:222"}}
	if got := revisionChange(active, active.SpecHash, active.Images); got != "none (status active)" {
		t.Errorf("unchanged: %q", got)
	}
	got := revisionChange(active, "bbbbbbbbbbbbbbbbbbbb", map[string]string{"api": "sha256:333333333333333333", "web": "sha256:444"})
	want := "definition aaaaaaaaaaaa → bbbbbbbbbbbb; api image 111111111111 → 333333333333; web image none → 444; db image dropped"
	if got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
}
