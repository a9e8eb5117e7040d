package cluster

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/fractalrt/fractal/actors"
)

// Defaults used when Config leaves a field zero.
const (
	DefaultListenAddr     = "127.0.0.1:0"
	DefaultPrefix         = "/fractal/"
	DefaultPlacementDepth = 1
	DefaultLeaseTTL       = 10 * time.Second
	DefaultRequestTimeout = 30 * time.Second
	DefaultMaxInflight    = 4096
	DefaultMaxSubtrees    = 100_000
)

// Config configures a Node. Name, DataDir and Etcd are required; every
// other field has a default.
type Config struct {
	// Name identifies the node in the ownership table; it must stay the
	// same across restarts, since the subtrees it owns are files in its
	// DataDir.
	Name string

	// DataDir is the node's data directory, opened with actors.Open.
	DataDir string

	// Options are the actors.Options of the node's System. Every node of a
	// cluster declares the same Kinds. Remote and Fence are set by the
	// Node and must be left nil.
	Options actors.Options

	// ListenAddr is the host:port the remote transport (gRPC) listens on;
	// DefaultListenAddr (loopback, any free port) when empty. Other nodes
	// reach this node at the address it actually listens on, unless
	// AdvertiseAddr says otherwise.
	ListenAddr string

	// AdvertiseAddr, when set, is the address other nodes dial (behind a
	// NAT or a proxy); by default the address the listener got.
	AdvertiseAddr string

	// TLS, when not nil, secures the remote transport: its certificates
	// serve, its roots verify peers. Nil: plain gRPC, for loopback and
	// trusted networks.
	TLS *tls.Config

	// Etcd lists the etcd endpoints ("127.0.0.1:2379"); EtcdTLS, when not
	// nil, secures the connection to them.
	Etcd    []string
	EtcdTLS *tls.Config

	// Prefix is the key prefix of the cluster in etcd (DefaultPrefix), so
	// one etcd can serve several clusters. It must end with '/'.
	Prefix string

	// PlacementDepth is the depth of the subtrees that are placed whole
	// (DefaultPlacementDepth): with 2, "mail/example.org" and everything
	// below it live on one node. Parts above that depth are placed one by
	// one. Every node of a cluster uses the same depth; the first node
	// records it in etcd and later ones with another are refused.
	PlacementDepth int

	// LeaseTTL is the time-to-live of the node's registration
	// (DefaultLeaseTTL; whole seconds, at least one). A node that cannot
	// renew it within that time stops acknowledging writes, and the
	// others report its subtrees unavailable.
	LeaseTTL time.Duration

	// RequestTimeout bounds a request to another node whose context has
	// no deadline (DefaultRequestTimeout).
	RequestTimeout time.Duration

	// MaxInflight bounds the requests from other nodes this node serves at
	// once, and separately the requests it has sent to other nodes and
	// waits for (DefaultMaxInflight each); beyond it they are refused with
	// an error wrapping actors.ErrBackpressure.
	MaxInflight int

	// MaxSubtrees bounds the ownership table, and so each node's cached
	// copy of it (about 100 bytes per subtree): a new subtree beyond it
	// is refused with ErrTooManySubtrees. DefaultMaxSubtrees when zero.
	MaxSubtrees int

	// Logger receives the node's logs. Nil discards them.
	Logger *slog.Logger
}

// validate checks c and fills in the defaults.
func (c *Config) validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrConfig, fmt.Sprintf(format, args...))
	}
	switch {
	case c.Name == "" || strings.ContainsAny(c.Name, "/ \t\n"):
		return bad("name %q: want a non-empty name without '/' or spaces", c.Name)
	case c.DataDir == "":
		return bad("empty DataDir")
	case len(c.Etcd) == 0:
		return bad("no etcd endpoints")
	case c.Options.Remote != nil || c.Options.Fence != nil:
		return bad("Options.Remote and Options.Fence are the node's to set")
	case c.PlacementDepth < 0 || c.LeaseTTL < 0 || c.RequestTimeout < 0 || c.MaxInflight < 0 || c.MaxSubtrees < 0:
		return bad("negative bound")
	}
	if c.ListenAddr == "" {
		c.ListenAddr = DefaultListenAddr
	}
	if _, _, err := net.SplitHostPort(c.ListenAddr); err != nil {
		return bad("listen address %q: %v", c.ListenAddr, err)
	}
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if !strings.HasSuffix(c.Prefix, "/") {
		return bad("prefix %q must end with '/'", c.Prefix)
	}
	if c.PlacementDepth == 0 {
		c.PlacementDepth = DefaultPlacementDepth
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = DefaultLeaseTTL
	}
	if c.LeaseTTL < time.Second {
		return bad("lease TTL %v: at least one second", c.LeaseTTL)
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = DefaultRequestTimeout
	}
	if c.MaxInflight == 0 {
		c.MaxInflight = DefaultMaxInflight
	}
	if c.MaxSubtrees == 0 {
		c.MaxSubtrees = DefaultMaxSubtrees
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}
