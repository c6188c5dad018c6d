package runtime

import (
	"context"
	"net"
	"slices"
	"sync"
	"testing"

	"github.com/outpostdev/outpost/appliance/engine"
	"github.com/outpostdev/outpost/appliance/model"
)

// specEngine records the spec of every container created.
type specEngine struct {
	*fakeEngine
	mu    sync.Mutex
	specs map[string]engine.ContainerSpec
}

func (s *specEngine) CreateContainer(ctx context.Context, spec engine.ContainerSpec) (string, error) {
	s.mu.Lock()
	s.specs[spec.Labels[engine.LabelService]] = spec
	s.mu.Unlock()
	return s.fakeEngine.CreateContainer(ctx, spec)
}

// The proxy's needs shape the containers: upstream ports published on
// loopback at remembered host ports (a fixed loopback port reused), the
// sites' host names resolving to the host, the CA root mounted read-only
// where asked; a second Up keeps the containers.
func TestProxyNeedsShapeContainers(t *testing.T) {
	eng := &specEngine{fakeEngine: newFake(), specs: map[string]engine.ContainerSpec{}}
	rt := newRuntime(t, eng)
	app := testApp()
	// Up checks that a fixed host port is free: take one that is.
	fixed := freeLoopbackPort(t)
	app.Services["web"].Ports = []model.Port{{HostIP: "127.0.0.1", HostPort: fixed, ContainerPort: 3000, Protocol: "tcp"}}
	app.Services["aux"].ExtraHosts = []string{"app.local:10.0.0.9"}
	app.Proxy = &model.Proxy{TLS: model.TLSInternal, CAMount: "/etc/outpost/ca.crt", CAMountServices: []string{"web"}}
	rt.SetProxyNeeds(func(context.Context, *model.Appliance) (ProxyNeeds, error) {
		return ProxyNeeds{
			Ports:  map[string][]uint16{"api": {8080, 8081}, "web": {3000}},
			Hosts:  []string{"app.local"},
			CARoot: "/state/proxy/ca-root.crt",
		}, nil
	})
	ctx := context.Background()
	ports, err := rt.ProxyPorts(ctx, app)
	if err != nil {
		t.Fatal(err)
	}
	a0, a1 := ports["api"][8080], ports["api"][8081]
	if a0 < proxyPortMin || a0 > proxyPortMax || a1 < proxyPortMin || a1 > proxyPortMax || a0 == a1 || ports["web"][3000] != fixed {
		t.Fatalf("ports = %v", ports)
	}
	if _, err := rt.Up(ctx, app, UpOptions{}); err != nil {
		t.Fatal(err)
	}
	api := eng.specs["api"]
	want := []engine.PortSpec{{HostIP: "127.0.0.1", HostPort: a0, ContainerPort: 8080, Protocol: "tcp"}, {HostIP: "127.0.0.1", HostPort: a1, ContainerPort: 8081, Protocol: "tcp"}}
	if !slices.Equal(api.Ports, want) {
		t.Errorf("api ports = %+v, want %+v", api.Ports, want)
	}
	if web := eng.specs["web"]; len(web.Ports) != 1 || web.Ports[0].HostPort != fixed {
		t.Errorf("web ports = %+v, want only its own %d", web.Ports, fixed)
	}
	for _, svc := range []string{"api", "web", "db"} {
		if !slices.Contains(eng.specs[svc].ExtraHosts, "app.local:host-gateway") {
			t.Errorf("%s extra hosts = %v, want the hairpin alias", svc, eng.specs[svc].ExtraHosts)
		}
	}
	if hosts := eng.specs["aux"].ExtraHosts; !slices.Equal(hosts, []string{"app.local:10.0.0.9"}) {
		t.Errorf("aux extra hosts = %v, want its own mapping kept", hosts)
	}
	ca := engine.MountSpec{Type: "bind", Source: "/state/proxy/ca-root.crt", Target: "/etc/outpost/ca.crt", ReadOnly: true}
	if !slices.ContainsFunc(eng.specs["web"].Mounts, func(m engine.MountSpec) bool { return m.Target == ca.Target && m.Source == ca.Source && m.ReadOnly }) {
		t.Errorf("web mounts = %+v, want %+v", eng.specs["web"].Mounts, ca)
	}
	if slices.ContainsFunc(eng.specs["api"].Mounts, func(m engine.MountSpec) bool { return m.Target == ca.Target }) {
		t.Errorf("api mounts the CA but is not in ca_mount_services")
	}
	serving := rt.Serving(app.Name)
	for _, svc := range app.ServiceNames() {
		if !serving[svc] {
			t.Errorf("%s not serving after Up: %v", svc, serving)
		}
	}

	// Same ports, same specs: the second Up recreates nothing.
	creates := len(eng.creates)
	again, err := rt.ProxyPorts(ctx, app)
	if err != nil || again["api"][8080] != a0 {
		t.Fatalf("ports again = %v, %v", again, err)
	}
	if _, err := rt.Up(ctx, app, UpOptions{}); err != nil {
		t.Fatal(err)
	}
	if len(eng.creates) != creates {
		t.Errorf("second Up created %v", eng.creates[creates:])
	}
}

// freeLoopbackPort returns a TCP port on 127.0.0.1 that was free a moment
// ago.
func freeLoopbackPort(t *testing.T) uint16 {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return uint16(ln.Addr().(*net.TCPAddr).Port)
}
