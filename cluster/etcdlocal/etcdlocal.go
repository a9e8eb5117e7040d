// Package etcdlocal runs etcd members inside the current process, on
// loopback addresses, for tests and examples of package cluster. Production
// uses an external etcd cluster (cluster.Config.Etcd).
//
// A cluster of etcd members needs a majority of them to work: with two
// members the loss of one stops it, so tests that lose a member use three.
//
// Start serves clients over plain HTTP; StartTLS serves them over TLS and
// accepts only clients presenting a certificate signed by a given CA
// (cluster.Config.EtcdTLS is such a client). In both, the members talk to
// each other over plain HTTP: they run in one process, on loopback
// addresses, so peer TLS would protect nothing the tests look at.
package etcdlocal

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Cluster is a set of etcd members running in this process. Its methods
// are safe for concurrent use.
type Cluster struct {
	dir     string
	tls     *transport.TLSInfo
	peers   []url.URL
	urls    []url.URL
	clients []string

	mu      sync.Mutex
	members []*embed.Etcd // nil: stopped
}

// TLSFiles names the PEM files with which StartTLS's members serve their
// clients.
type TLSFiles struct {
	// CA is the certificate of the authority that signs the clients'
	// certificates: a client without one it signed is refused.
	CA string
	// Cert and Key are the members' server certificate (valid for
	// 127.0.0.1) and its private key.
	Cert, Key string
}

// Start starts n members (1 or more; 3 for a cluster that survives the
// loss of one) with their data under dir, listening on free loopback
// ports, and waits (within ctx) until they serve. The members skip fsync:
// they are for tests and examples, not for keeping data.
func Start(ctx context.Context, dir string, n int) (*Cluster, error) {
	return start(ctx, dir, n, nil)
}

// StartTLS is Start with the members serving their clients over TLS, with
// files' certificate, and refusing clients that present no certificate
// signed by files.CA (etcd's --client-cert-auth). Clients connect to
// Endpoints with a tls.Config that trusts files.CA and holds such a
// certificate.
func StartTLS(ctx context.Context, dir string, n int, files TLSFiles) (*Cluster, error) {
	if files.CA == "" || files.Cert == "" || files.Key == "" {
		return nil, errors.New("etcdlocal: TLS needs a CA, a certificate and a key")
	}
	return start(ctx, dir, n, &transport.TLSInfo{
		CertFile:       files.Cert,
		KeyFile:        files.Key,
		TrustedCAFile:  files.CA,
		ClientCertAuth: true,
	})
}

// startAttempts bounds the starts tried when a port chosen free was taken
// before a member could bind it (see start).
const startAttempts = 5

// start starts the members. A free port is found by listening on port 0
// and closing the listener, so another process (or an outgoing connection
// given that ephemeral port) may take it before the member binds it: such
// a start is abandoned and tried again with new ports, in a new directory,
// up to startAttempts times.
func start(ctx context.Context, dir string, n int, tlsInfo *transport.TLSInfo) (*Cluster, error) {
	if n < 1 {
		return nil, errors.New("etcdlocal: at least one member")
	}
	for attempt := 1; ; attempt++ {
		adir := dir
		if attempt > 1 {
			adir = filepath.Join(dir, fmt.Sprintf("attempt%d", attempt))
		}
		c, err := startOnce(ctx, adir, n, tlsInfo)
		if err == nil || attempt == startAttempts || !errors.Is(err, syscall.EADDRINUSE) {
			return c, err
		}
	}
}

func startOnce(ctx context.Context, dir string, n int, tlsInfo *transport.TLSInfo) (*Cluster, error) {
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
		if tlsInfo != nil {
			c.Scheme = "https"
		}
		peers[i], clients[i] = p, c
	}
	c := &Cluster{dir: dir, tls: tlsInfo, peers: peers, urls: clients, members: make([]*embed.Etcd, n)}
	for i := range n {
		c.clients = append(c.clients, clients[i].Host)
	}
	for i := range n {
		e, err := embed.StartEtcd(c.config(i))
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("etcdlocal: member %d: %w", i, err)
		}
		c.members[i] = e
	}
	for i, e := range c.members {
		if err := ready(ctx, i, e); err != nil {
			c.Close()
			return nil, err
		}
	}
	return c, nil
}

// config is the configuration of member i: the same at every start, so
// that a restarted member finds its data and its addresses.
func (c *Cluster) config(i int) *embed.Config {
	var initial []string
	for j, p := range c.peers {
		initial = append(initial, fmt.Sprintf("m%d=%s", j, p.String()))
	}
	cfg := embed.NewConfig()
	cfg.Name = fmt.Sprintf("m%d", i)
	cfg.Dir = filepath.Join(c.dir, cfg.Name)
	cfg.ListenPeerUrls = []url.URL{c.peers[i]}
	cfg.AdvertisePeerUrls = []url.URL{c.peers[i]}
	cfg.ListenClientUrls = []url.URL{c.urls[i]}
	cfg.AdvertiseClientUrls = []url.URL{c.urls[i]}
	if c.tls != nil {
		cfg.ClientTLSInfo = *c.tls
	}
	cfg.InitialCluster = strings.Join(initial, ",")
	cfg.InitialClusterToken = "fractal-local"
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	cfg.UnsafeNoFsync = true
	cfg.TickMs, cfg.ElectionMs = 100, 1000 // etcd's defaults: fewer spurious elections on a loaded machine
	return cfg
}

// ready waits until member i serves: it has joined a cluster with a
// majority of its members running.
func ready(ctx context.Context, i int, e *embed.Etcd) error {
	select {
	case <-e.Server.ReadyNotify():
		return nil
	case err := <-e.Err():
		return fmt.Errorf("etcdlocal: member %d: %w", i, err)
	case <-ctx.Done():
		return fmt.Errorf("etcdlocal: waiting for member %d: %w", i, ctx.Err())
	case <-time.After(time.Minute):
		return fmt.Errorf("etcdlocal: member %d did not become ready", i)
	}
}

// Stop stops member i (0 to n-1), for tests of etcd's failures: it stops
// serving and leaves the cluster's majority, its data stays for Restart.
// Stopping a stopped member does nothing. With three members, the others
// serve on after one is stopped (electing a new leader if it led); with a
// majority stopped, no request needing consensus (every write, every
// linearizable read) is answered until enough of them are back.
func (c *Cluster) Stop(i int) {
	c.mu.Lock()
	e := c.members[i]
	c.members[i] = nil
	c.mu.Unlock()
	if e != nil {
		e.Close()
	}
}

// Restart starts the stopped member i again, with its data and its
// addresses, and waits (within ctx) until it serves, which needs a
// majority of the members running: to bring back a majority, restart its
// members concurrently. Restarting a running member does nothing.
func (c *Cluster) Restart(ctx context.Context, i int) error {
	c.mu.Lock()
	if c.members[i] != nil {
		c.mu.Unlock()
		return nil
	}
	e, err := embed.StartEtcd(c.config(i))
	if err != nil {
		c.mu.Unlock()
		return fmt.Errorf("etcdlocal: member %d: %w", i, err)
	}
	c.members[i] = e
	c.mu.Unlock()
	return ready(ctx, i, e)
}

// Leader returns the index of the member that leads the cluster, as the
// running members see it, or -1 when none does.
func (c *Cluster) Leader() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, e := range c.members {
		if e != nil && e.Server.Leader() == e.Server.MemberID() {
			return i
		}
	}
	return -1
}

// Endpoints returns the members' client addresses (host:port), as
// cluster.Config.Etcd takes them. Whether a client uses TLS depends on its
// configuration (cluster.Config.EtcdTLS), not on these addresses: the
// members of StartTLS accept only TLS, those of Start only plain HTTP.
func (c *Cluster) Endpoints() []string { return append([]string(nil), c.clients...) }

// Close stops every member. It is safe to call twice.
func (c *Cluster) Close() {
	for i := range c.members {
		c.Stop(i)
	}
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
