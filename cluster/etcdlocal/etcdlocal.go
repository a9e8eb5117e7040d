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
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Cluster is a set of etcd members running in this process.
type Cluster struct {
	members []*embed.Etcd
	clients []string
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

func start(ctx context.Context, dir string, n int, tlsInfo *transport.TLSInfo) (*Cluster, error) {
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
		if tlsInfo != nil {
			c.Scheme = "https"
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
		if tlsInfo != nil {
			cfg.ClientTLSInfo = *tlsInfo
		}
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

// Endpoints returns the members' client addresses (host:port), as
// cluster.Config.Etcd takes them. Whether a client uses TLS depends on its
// configuration (cluster.Config.EtcdTLS), not on these addresses: the
// members of StartTLS accept only TLS, those of Start only plain HTTP.
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
