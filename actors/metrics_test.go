package actors_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"

	"github.com/fractalrt/fractal/actors"
	"github.com/fractalrt/fractal/actors/actortest"
)

// openWithMetrics opens a system of testKinds on a fresh registry, with the
// durability d.
func openWithMetrics(t *testing.T, reg *prometheus.Registry, dir string, d actors.Durability) *actors.System {
	t.Helper()
	sys, err := actors.Open(context.Background(), dir, actors.Options{Kinds: testKinds(), Registerer: reg, Durability: d})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sys.Close(context.Background()) })
	return sys
}

// traffic sends ok, failing and panicking messages, and a scatter.
func traffic(t *testing.T, sys *actors.System) {
	t.Helper()
	ctx := context.Background()
	for range 3 {
		if _, err := sys.Request(ctx, "c/a/x", add{1}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := sys.Request(ctx, "c/a/x", addFail{1}); !errors.Is(err, errTest) {
		t.Fatalf("addFail: %v", err)
	}
	if _, err := sys.Request(ctx, "c/a/x", addPanic{1}); !errors.Is(err, actors.ErrPanic) {
		t.Fatalf("addPanic: %v", err)
	}
	for r := range sys.Scatter(ctx, "c/*/*", get{}, nil) {
		if r.Err != nil {
			t.Fatalf("scatter %s: %v", r.Path, r.Err)
		}
	}
	// The restart happens after the panic's reply: wait for it.
	actortest.Eventually(t, func() bool { return sys.Stats().Restarts > 0 })
}

func TestMetricsCountOutcomes(t *testing.T) {
	reg := prometheus.NewRegistry()
	sys := openWithMetrics(t, reg, t.TempDir(), actors.ProcessCrash)
	traffic(t, sys)
	msgs := func(kind, outcome string) float64 {
		return counterValue(t, reg, "fractal_messages_total", map[string]string{"kind": kind, "outcome": outcome})
	}
	// c/a/x: 3 ok, 1 error, 1 panic, then 1 ok from the scatter.
	if got := msgs("leaf", "ok"); got != 4 {
		t.Errorf("leaf ok = %v, want 4", got)
	}
	if got := msgs("leaf", "error"); got != 1 {
		t.Errorf("leaf error = %v, want 1", got)
	}
	if got := msgs("leaf", "panic"); got != 1 {
		t.Errorf("leaf panic = %v, want 1", got)
	}
	if got := msgs("leaf", "commit_error"); got != 0 {
		t.Errorf("leaf commit_error = %v, want 0", got)
	}
	if got := counterValue(t, reg, "fractal_restarts_total", map[string]string{"kind": "leaf", "strategy": "one_for_one"}); got != 1 {
		t.Errorf("restarts = %v, want 1", got)
	}
	if got := counterValue(t, reg, "fractal_activations_total", map[string]string{"kind": "leaf", "outcome": "ok"}); got < 2 {
		t.Errorf("leaf activations = %v, want at least 2 (one restart)", got)
	}
	if got := gaugeValue(t, reg, "fractal_active_parts", map[string]string{"kind": "leaf"}); got != 1 {
		t.Errorf("active leaf parts = %v, want 1", got)
	}
	if got := gaugeValue(t, reg, "fractal_part_file_bytes", map[string]string{"kind": "leaf"}); got <= 0 {
		t.Errorf("leaf file bytes = %v, want > 0", got)
	}
	if got := histogramCount(t, reg, "fractal_scatter_parts"); got != 1 {
		t.Errorf("scatter calls = %v, want 1", got)
	}
}

// Everything a System registers passes promlint, and carries only the
// bounded labels: never a path.
func TestMetricsLintAndLabels(t *testing.T) {
	reg := prometheus.NewRegistry()
	sys := openWithMetrics(t, reg, t.TempDir(), actors.PowerLoss)
	traffic(t, sys)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	kinds := []string{"top", "mid", "leaf"}
	allowed := map[string][]string{
		"kind":     kinds,
		"outcome":  {"ok", "error", "panic", "commit_error", "sync_error", "activation_error", "canceled"},
		"strategy": {"one_for_one", "one_for_all", "rest_for_one"},
	}
	for _, mf := range mfs {
		if !strings.HasPrefix(mf.GetName(), "fractal_") {
			t.Errorf("metric %s lacks the fractal_ prefix", mf.GetName())
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				vals, ok := allowed[l.GetName()]
				if !ok {
					t.Errorf("%s: label %q not allowed", mf.GetName(), l.GetName())
				} else if !slices.Contains(vals, l.GetValue()) {
					t.Errorf("%s: label %s=%q not in %v", mf.GetName(), l.GetName(), l.GetValue(), vals)
				}
			}
		}
	}
	for _, name := range []string{"fractal_barrier_syncs_total", "fractal_barrier_sync_duration_seconds", "fractal_barrier_wait_seconds"} {
		if testutil.CollectAndCount(reg, name) == 0 {
			t.Errorf("%s not exported with PowerLoss", name)
		}
	}
	if got := counterValue(t, reg, "fractal_barrier_syncs_total", nil); got == 0 {
		t.Error("no barrier sync counted")
	}
}

// Close unregisters: a second Open on the same registry works, and a
// second System cannot register while the first is open.
func TestMetricsReopenOnSameRegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	dir := t.TempDir()
	ctx := context.Background()
	sys := openWithMetrics(t, reg, dir, actors.ProcessCrash)
	if _, err := sys.Request(ctx, "c/a", add{1}); err != nil {
		t.Fatal(err)
	}
	if _, err := actors.Open(ctx, t.TempDir(), actors.Options{Kinds: testKinds(), Registerer: reg}); err == nil {
		t.Fatal("a second open System registered on the same registry")
	}
	if err := sys.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if n := testutil.CollectAndCount(reg); n != 0 {
		t.Errorf("%d metrics left registered after Close", n)
	}
	sys = openWithMetrics(t, reg, dir, actors.ProcessCrash)
	if _, err := sys.Request(ctx, "c/a", add{1}); err != nil {
		t.Fatal(err)
	}
	if got := counterValue(t, reg, "fractal_messages_total", map[string]string{"kind": "mid", "outcome": "ok"}); got != 1 {
		t.Errorf("after reopen, mid ok = %v, want 1", got)
	}
}

// Without a Registerer nothing is registered anywhere.
func TestNoMetricsWithoutRegisterer(t *testing.T) {
	before, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sys, err := actors.Open(context.Background(), t.TempDir(), actors.Options{Kinds: testKinds(), Durability: actors.ProcessCrash})
	if err != nil {
		t.Fatal(err)
	}
	defer sys.Close(context.Background())
	if _, err := sys.Request(context.Background(), "c/a", add{1}); err != nil {
		t.Fatal(err)
	}
	after, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range after {
		if strings.HasPrefix(mf.GetName(), "fractal_") {
			t.Errorf("%s registered globally", mf.GetName())
		}
	}
	if len(after) != len(before) {
		t.Errorf("default registry went from %d to %d families", len(before), len(after))
	}
}

// Every query of the Grafana dashboard names a metric the runtime exports.
func TestGrafanaDashboardMetricsExist(t *testing.T) {
	raw, err := os.ReadFile("../examples/grafana/fractal.json")
	if err != nil {
		t.Fatal(err)
	}
	var exprs []string
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if s, ok := x.(string); ok && k == "expr" {
					exprs = append(exprs, s)
				}
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	var doc any
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	walk(doc)
	if len(exprs) == 0 {
		t.Fatal("no expr in the dashboard")
	}
	reg := prometheus.NewRegistry()
	sys := openWithMetrics(t, reg, t.TempDir(), actors.PowerLoss)
	traffic(t, sys)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	exported := map[string]bool{}
	for _, mf := range mfs {
		exported[mf.GetName()] = true
		if mf.GetType() == dto.MetricType_HISTOGRAM {
			for _, s := range []string{"_bucket", "_sum", "_count"} {
				exported[mf.GetName()+s] = true
			}
		}
	}
	re := regexp.MustCompile(`\b[a-zA-Z_:][a-zA-Z0-9_:]*_[a-zA-Z0-9_:]+\b`)
	names := 0
	for _, e := range exprs {
		for _, name := range re.FindAllString(e, -1) {
			if !strings.HasPrefix(name, "fractal_") {
				continue
			}
			names++
			if !exported[name] {
				t.Errorf("dashboard query %q names %s, which is not exported", e, name)
			}
		}
	}
	if names == 0 {
		t.Error("no fractal_ metric named in the dashboard")
	}
}

// find returns the metric of family name whose labels include want.
func find(t *testing.T, reg *prometheus.Registry, name string, want map[string]string) *dto.Metric {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for k, v := range want {
				if !slices.ContainsFunc(m.GetLabel(), func(l *dto.LabelPair) bool { return l.GetName() == k && l.GetValue() == v }) {
					continue next
				}
			}
			return m
		}
	}
	t.Fatalf("no %s%v", name, want)
	return nil
}

func counterValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	return find(t, reg, name, labels).GetCounter().GetValue()
}

func gaugeValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	return find(t, reg, name, labels).GetGauge().GetValue()
}

func histogramCount(t *testing.T, reg *prometheus.Registry, name string) uint64 {
	t.Helper()
	return find(t, reg, name, nil).GetHistogram().GetSampleCount()
}

func TestServeMetrics(t *testing.T) {
	for _, addr := range []string{":0", "0.0.0.0:0", "192.0.2.1:9464", "example.org:9464", "nohost"} {
		if s, err := actors.ServeMetrics(addr, prometheus.NewRegistry()); err == nil {
			s.Close(context.Background())
			t.Errorf("ServeMetrics(%q) accepted a non-loopback address", addr)
		}
	}
	reg := prometheus.NewRegistry()
	sys := openWithMetrics(t, reg, t.TempDir(), actors.ProcessCrash)
	if _, err := sys.Request(context.Background(), "c/a", add{1}); err != nil {
		t.Fatal(err)
	}
	s, err := actors.ServeMetrics("127.0.0.1:0", reg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	resp, err := http.Get("http://" + s.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(body), `fractal_messages_total{kind="mid",outcome="ok"} 1`) {
		t.Errorf("/metrics lacks the message counted:\n%s", body)
	}
}
