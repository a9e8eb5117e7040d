// Package etcdlocal runs etcd members inside the current process, on
// loopback addresses, for tests and examples of package cluster. Production
// uses an external etcd cluster (cluster.Config.Etcd).
//
// A cluster of etcd members needs a majority of them to work: with two
// members the loss of one stops it, so tests that lose a member use three.
package etcdlocal

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Cluster is a set of etcd members running in this process.
type Cluster struct {
	members []*embed.Etcd
	clients []string
}

// Start starts n members (1 or more; 3 for a cluster that survives the
// loss of one) with their data under dir, listening on free loopback
// ports, and waits (within ctx) until they serve. The members skip fsync:
// they are for tests and examples, not for keeping data.
func Start(ctx context.Context, dir string, n int) (*Cluster, error) {
	if n < 1 {
		return nil, errors.New("etcdlocal: at least one member")
	}
	peers := make([]url.URL, n)
	clients := make([]url.URL, n)
	for i := range n {
		p, err := freeURL()
		if err != nil {
			return nil, err
		}
		c, err := freeURL()
		if err != nil {
			return nil, err
		}
		peers[i], clients[i] = p, c
	}
	var initial []string
	for i := range n {
		initial = append(initial, fmt.Sprintf("m%d=%s", i, peers[i].String()))
	}
	c := &Cluster{}
	for i := range n {
		cfg := embed.NewConfig()
		cfg.Name = fmt.Sprintf("m%d", i)
		cfg.Dir = filepath.Join(dir, cfg.Name)
		cfg.ListenPeerUrls = []url.URL{peers[i]}
		cfg.AdvertisePeerUrls = []url.URL{peers[i]}
		cfg.ListenClientUrls = []url.URL{clients[i]}
		cfg.AdvertiseClientUrls = []url.URL{clients[i]}
		cfg.InitialCluster = strings.Join(initial, ",")
		cfg.InitialClusterToken = "fractal-local"
		cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
		cfg.UnsafeNoFsync = true
		cfg.TickMs, cfg.ElectionMs = 100, 1000 // etcd's defaults: fewer spurious elections on a loaded machine
		e, err := embed.StartEtcd(cfg)
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("etcdlocal: member %d: %w", i, err)
		}
		c.members = append(c.members, e)
		c.clients = append(c.clients, clients[i].Host)
	}
	for i, e := range c.members {
		select {
		case <-e.Server.ReadyNotify():
		case err := <-e.Err():
			c.Close()
			return nil, fmt.Errorf("etcdlocal: member %d: %w", i, err)
		case <-ctx.Done():
			c.Close()
			return nil, fmt.Errorf("etcdlocal: waiting for the members: %w", ctx.Err())
		case <-time.After(time.Minute):
			c.Close()
			return nil, fmt.Errorf("etcdlocal: member %d did not become ready", i)
		}
	}
	return c, nil
}

// Endpoints returns the members' client addresses (host:port).
func (c *Cluster) Endpoints() []string { return append([]string(nil), c.clients...) }

// Close stops every member. It is safe to call twice.
func (c *Cluster) Close() {
	for _, e := range c.members {
		e.Close()
	}
	c.members = nil
}

func freeURL() (url.URL, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return url.URL{}, fmt.Errorf("etcdlocal: %w", err)
	}
	addr := l.Addr().String()
	l.Close()
	return url.URL{Scheme: "http", Host: addr}, nil
}
