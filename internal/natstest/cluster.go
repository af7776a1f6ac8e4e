package natstest

import (
	"fmt"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Cluster is a JetStream cluster of in-process servers on loopback, with routes between them.
type Cluster struct {
	t       testing.TB
	name    string
	opts    []*server.Options
	Servers []*server.Server
}

// freePorts reserves n free loopback ports (they are released before use; good enough for
// tests on one machine).
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	var ls []net.Listener
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		_ = l.Close()
	}
	return ports
}

// StartCluster starts an n-node cluster and stops it when the test ends.
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	ports := freePorts(t, 2*n)
	c := &Cluster{t: t, name: "jetflow-test"}
	var routes []*url.URL
	for i := range n {
		u, _ := url.Parse(fmt.Sprintf("nats-route://127.0.0.1:%d", ports[n+i]))
		routes = append(routes, u)
	}
	for i := range n {
		c.opts = append(c.opts, &server.Options{
			ServerName: fmt.Sprintf("n%d", i+1),
			Host:       "127.0.0.1",
			Port:       ports[i],
			JetStream:  true,
			StoreDir:   t.TempDir(),
			NoLog:      true,
			NoSigs:     true,
			Cluster:    server.ClusterOpts{Name: c.name, Host: "127.0.0.1", Port: ports[n+i]},
			Routes:     routes,
		})
	}
	c.Servers = make([]*server.Server, n)
	for i := range n {
		c.start(i)
	}
	t.Cleanup(func() {
		for _, s := range c.Servers {
			if s != nil {
				s.Shutdown()
				s.WaitForShutdown()
			}
		}
	})
	c.WaitReady()
	return c
}

func (c *Cluster) start(i int) {
	c.t.Helper()
	o := *c.opts[i]
	s, err := server.NewServer(&o)
	if err != nil {
		c.t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(30 * time.Second) {
		c.t.Fatalf("server %s did not start", o.ServerName)
	}
	c.Servers[i] = s
}

// WaitReady waits until JetStream has a meta leader that can place an asset on every node:
// each is up, current, and has sent the leader its stats (until then a stream at R3 fails
// with "no suitable peers for placement").
func (c *Cluster) WaitReady() {
	c.t.Helper()
	Eventually(c.t, 30*time.Second, func() bool {
		for _, s := range c.Servers {
			if s == nil || !s.JetStreamIsCurrent() {
				return false
			}
		}
		for _, s := range c.Servers {
			if s.JetStreamIsLeader() {
				return len(s.JetStreamClusterPeers()) == len(c.Servers)
			}
		}
		return false
	}, "the cluster has no JetStream meta leader that sees every node")
}

// URLs is the comma-separated client URL list.
func (c *Cluster) URLs() string {
	var us []string
	for _, o := range c.opts {
		us = append(us, fmt.Sprintf("nats://127.0.0.1:%d", o.Port))
	}
	return strings.Join(us, ",")
}

// Index returns the index of the server called name, or -1.
func (c *Cluster) Index(name string) int {
	for i, o := range c.opts {
		if o.ServerName == name {
			return i
		}
	}
	return -1
}

// Stop shuts server i down (its store is kept).
func (c *Cluster) Stop(i int) {
	c.Servers[i].Shutdown()
	c.Servers[i].WaitForShutdown()
	c.Servers[i] = nil
}

// Restart starts server i again on the same ports and store.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	c.start(i)
}
