package actors

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// MetricsHandler returns an http.Handler that serves what g gathers in the
// Prometheus exposition formats, as a /metrics endpoint does.
func MetricsHandler(g prometheus.Gatherer) http.Handler {
	return promhttp.HandlerFor(g, promhttp.HandlerOpts{})
}

// A MetricsServer serves a Gatherer at /metrics on a loopback address (see
// ServeMetrics).
type MetricsServer struct {
	srv  *http.Server
	ln   net.Listener
	done chan error
}

// ServeMetrics listens on addr and serves g at /metrics until Close. addr
// must be a loopback address ("127.0.0.1:9464", "[::1]:0",
// "localhost:9464"); any other host, the empty one (every interface)
// included, is refused: metrics name the application's kinds and reveal
// its load, and exposing them beyond the machine is a decision to take
// with a reverse proxy, not by default.
func ServeMetrics(addr string, g prometheus.Gatherer) (*MetricsServer, error) {
	ln, err := ListenLoopback(addr)
	if err != nil {
		return nil, fmt.Errorf("actors: metrics: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", MetricsHandler(g))
	m := &MetricsServer{
		srv:  &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second},
		ln:   ln,
		done: make(chan error, 1),
	}
	go func() { m.done <- m.srv.Serve(ln) }()
	return m, nil
}

// ListenLoopback listens on addr, which must be a loopback address
// ("127.0.0.1:9464", "[::1]:0", "localhost:9464"); any other host, the
// empty one (every interface) included, is refused. The runtime's own
// listeners (metrics, and the inspection page in the examples) use it, so
// that nothing is exposed beyond the machine unless the application does
// so deliberately.
func ListenLoopback(addr string) (net.Listener, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("address %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return nil, fmt.Errorf("address %q: refusing a non-loopback host %q (use 127.0.0.1 or [::1])", addr, host)
	}
	return net.Listen("tcp", addr)
}

// Addr returns the address the server listens on.
func (m *MetricsServer) Addr() net.Addr { return m.ln.Addr() }

// Close stops the server, waiting within ctx for the scrapes under way.
func (m *MetricsServer) Close(ctx context.Context) error {
	err := m.srv.Shutdown(ctx)
	if serr := <-m.done; !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	return err
}
