package cli

import (
	"io"
	"strings"
	"testing"
	"time"

	"github.com/outpostdev/outpost/appliance/volumes"
)

func TestConfirmPrune(t *testing.T) {
	since := time.Now().Add(-time.Hour)
	plan := volumes.PrunePlan{Appliance: "tale", Remove: []volumes.Info{
		{Name: "tale_b", LegacySince: &since}, {Name: "tale_a", LegacySince: &since},
	}}
	s := Streams{In: strings.NewReader("tale\n"), Out: io.Discard, Err: io.Discard}
	cases := []struct {
		args []string
		yes  bool
		want string // error substring; "" = confirmed
	}{
		{[]string{"tale_a", "tale_b"}, true, ""},
		{[]string{"tale_b", "tale_a", "tale_a"}, true, ""},
		{nil, true, "exact names"},
		{[]string{"tale_a"}, true, "exact names"},
		{[]string{"tale_a", "tale_b", "tale_c"}, true, "exact names"},
		// Not a terminal: typed input is not read, --yes is required.
		{[]string{"tale_a", "tale_b"}, false, "typed confirmation"},
		{nil, false, "typed confirmation"},
	}
	for _, c := range cases {
		by, err := confirmPrune(s, plan, c.args, c.yes)
		switch {
		case c.want == "" && (err != nil || !strings.Contains(by, "--yes")):
			t.Errorf("%v yes=%v: %q %v, want confirmed", c.args, c.yes, by, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%v yes=%v: %v, want an error with %q", c.args, c.yes, err, c.want)
		}
	}
}
