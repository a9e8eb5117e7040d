package actors

import (
	"errors"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Outcomes of a message, the values of the "outcome" label of
// fractal_messages_total.
const (
	OutcomeOK              = "ok"               // handled, committed and durable: the reply was released
	OutcomeError           = "error"            // the handler returned an error (or its savepoint failed): rolled back
	OutcomePanic           = "panic"            // the handler panicked: rolled back, the part restarted
	OutcomeCommitError     = "commit_error"     // handled, but its batch's commit failed
	OutcomeSyncError       = "sync_error"       // committed, but the barrier's sync failed
	OutcomeActivationError = "activation_error" // its part could not be activated (or begin a transaction)
	OutcomeCanceled        = "canceled"         // its context ended before its part reached it
)

var outcomes = []string{OutcomeOK, OutcomeError, OutcomePanic, OutcomeCommitError, OutcomeSyncError, OutcomeActivationError, OutcomeCanceled}

// outcome indexes outcomes.
type outcome uint8

const (
	outOK outcome = iota
	outError
	outPanic
	outCommitError
	outSyncError
	outActivationError
	outCanceled
)

// Bucket bounds, in seconds or counts.
var (
	fastSecondsBuckets = prometheus.ExponentialBuckets(10e-6, 4, 10)    // 10µs .. 2.6s: handlers, commits
	slowSecondsBuckets = prometheus.ExponentialBuckets(100e-6, 2.5, 12) // 100µs .. 5.96s: syncs, barrier waits, activations
	sizeBuckets        = prometheus.ExponentialBuckets(1, 2, 10)        // 1 .. 512: batch sizes
	fanoutBuckets      = prometheus.ExponentialBuckets(1, 4, 9)         // 1 .. 65536: parts asked per Scatter
)

// fileStatInterval bounds how often a part stats its files after commits
// that wrote (see fractal_part_file_bytes).
const fileStatInterval = time.Second

// metrics are a System's Prometheus metrics, built by Open when
// Options.Registerer is set, registered there and unregistered by Close.
// The hot path reaches them through kindMetrics, resolved once per kind.
// It has one field per metric the runtime exports, hence its size.
type metrics struct {
	reg        prometheus.Registerer
	registered []prometheus.Collector

	messages     *prometheus.CounterVec
	handlerTime  *prometheus.HistogramVec
	commitTime   *prometheus.HistogramVec
	batchSize    *prometheus.HistogramVec
	activations  *prometheus.CounterVec
	activateTime *prometheus.HistogramVec
	restarts     *prometheus.CounterVec
	escalations  *prometheus.CounterVec
	passivations *prometheus.CounterVec

	barrierWait  prometheus.Histogram
	barrierSyncs prometheus.Counter
	syncTime     prometheus.Histogram

	scatterFanout prometheus.Histogram
	scatterErrors prometheus.Counter

	alarmDeliveries *prometheus.CounterVec
	alarmLateness   prometheus.Histogram
	deliveries      *prometheus.CounterVec // durable delivery attempts, by outcome
	deliveryTime    prometheus.Histogram
	deadLetters     prometheus.Counter
}

// kindMetrics are the children of the metric vectors for one kind, so that
// a message costs no label lookup.
type kindMetrics struct {
	messages     [outCanceled + 1]prometheus.Counter
	handlerTime  prometheus.Observer
	commitTime   prometheus.Observer
	batchSize    prometheus.Observer
	activationOK prometheus.Counter
	activationKO prometheus.Counter
	activateTime prometheus.Observer
	escalations  prometheus.Counter
	passivations prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	kind := []string{"kind"}
	return &metrics{
		reg: reg,
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fractal_messages_total",
			Help: "Messages that reached a part, by kind of the part and outcome (ok, error, panic, commit_error, sync_error, activation_error, canceled).",
		}, []string{"kind", "outcome"}),
		handlerTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "fractal_handler_duration_seconds",
			Help:    "Time spent in handlers, per message, by kind.",
			Buckets: fastSecondsBuckets,
		}, kind),
		commitTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "fractal_commit_duration_seconds",
			Help:    "Time to commit one batch transaction (without the barrier's sync), by kind.",
			Buckets: fastSecondsBuckets,
		}, kind),
		batchSize: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "fractal_batch_messages",
			Help:    "Messages per group-commit batch, by kind.",
			Buckets: sizeBuckets,
		}, kind),
		activations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fractal_activations_total",
			Help: "Activations of parts (file opened, migrated, Activate run), by kind and outcome (ok, error).",
		}, []string{"kind", "outcome"}),
		activateTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "fractal_activation_duration_seconds",
			Help:    "Time to activate a part, by kind.",
			Buckets: slowSecondsBuckets,
		}, kind),
		restarts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fractal_restarts_total",
			Help: "Parts restarted by their parents after failures, by kind of the restarted part and supervision strategy of its parent.",
		}, []string{"kind", "strategy"}),
		escalations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fractal_escalations_total",
			Help: "Parts that exceeded their restart intensity and failed themselves (escalation), by kind of the failing parent.",
		}, kind),
		passivations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fractal_passivations_total",
			Help: "Parts passivated (file closed, actor stopped) because they were idle or the cap on active parts was reached, by kind.",
		}, kind),
		barrierWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "fractal_barrier_wait_seconds",
			Help:    "Time from a commit's hand-over to the durability barrier to its release after a sync (PowerLoss only).",
			Buckets: slowSecondsBuckets,
		}),
		barrierSyncs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fractal_barrier_syncs_total",
			Help: "Syncs of the data directory's file system by the durability barrier (PowerLoss only).",
		}),
		syncTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "fractal_barrier_sync_duration_seconds",
			Help:    "Duration of one sync of the durability barrier (PowerLoss only).",
			Buckets: slowSecondsBuckets,
		}),
		scatterFanout: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "fractal_scatter_parts",
			Help:    "Parts asked per Scatter call.",
			Buckets: fanoutBuckets,
		}),
		alarmDeliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fractal_alarm_deliveries_total",
			Help: "Durable alarms delivered to handlers, by kind and outcome (ok, or error: retried later).",
		}, []string{"kind", "outcome"}),
		alarmLateness: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "fractal_alarm_lateness_seconds",
			Help:    "How long after its due time an alarm reached its handler.",
			Buckets: slowSecondsBuckets,
		}),
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fractal_durable_deliveries_total",
			Help: "Delivery attempts of durable messages, by outcome (ok: acknowledged by the receiver; error: retried later).",
		}, []string{"outcome"}),
		deliveryTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "fractal_durable_delivery_seconds",
			Help:    "From a durable message's dispatch to its acknowledgement (or failure), per attempt.",
			Buckets: slowSecondsBuckets,
		}),
		deadLetters: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fractal_dead_letters_total",
			Help: "Durable messages moved to their sender's dead-letter table.",
		}),
		scatterErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fractal_scatter_part_errors_total",
			Help: "Parts asked by Scatter that answered with an error or not in time.",
		}),
	}
}

// forKind resolves the children of the vectors for k, so that they exist
// (at zero) from Open on.
func (m *metrics) forKind(k *kindSpec) *kindMetrics {
	km := &kindMetrics{
		handlerTime:  m.handlerTime.WithLabelValues(k.Name),
		commitTime:   m.commitTime.WithLabelValues(k.Name),
		batchSize:    m.batchSize.WithLabelValues(k.Name),
		activationOK: m.activations.WithLabelValues(k.Name, "ok"),
		activationKO: m.activations.WithLabelValues(k.Name, "error"),
		activateTime: m.activateTime.WithLabelValues(k.Name),
		escalations:  m.escalations.WithLabelValues(k.Name),
		passivations: m.passivations.WithLabelValues(k.Name),
	}
	for i, o := range outcomes {
		km.messages[i] = m.messages.WithLabelValues(k.Name, o)
	}
	return km
}

// register registers every metric of s with m.reg, or none.
func (m *metrics) register(s *System) error {
	cs := []prometheus.Collector{
		m.messages, m.handlerTime, m.commitTime, m.batchSize,
		m.activations, m.activateTime, m.restarts, m.escalations, m.passivations,
		m.scatterFanout, m.scatterErrors, m.alarmDeliveries, m.alarmLateness,
		m.deliveries, m.deliveryTime, m.deadLetters,
		&partsCollector{sys: s},
	}
	if s.barrier != nil {
		cs = append(cs, m.barrierWait, m.barrierSyncs, m.syncTime)
	}
	for _, c := range cs {
		if err := m.reg.Register(c); err != nil {
			m.unregister()
			return err
		}
		m.registered = append(m.registered, c)
	}
	return nil
}

func (m *metrics) unregister() {
	for _, c := range m.registered {
		m.reg.Unregister(c)
	}
	m.registered = nil
}

// partsCollector samples the active parts at scrape time: it walks the map
// of active parts once per scrape, reading two atomics per part, so a
// scrape costs O(active parts) and takes no lock a part waits on.
type partsCollector struct{ sys *System }

var (
	activePartsDesc = prometheus.NewDesc("fractal_active_parts",
		"Active parts (actor running), by kind. Sampled at scrape.", []string{"kind"}, nil)
	mailboxDesc = prometheus.NewDesc("fractal_mailbox_messages",
		"Messages waiting in the mailboxes of the active parts (the one being handled included), by kind. Sampled at scrape.", []string{"kind"}, nil)
	fileBytesDesc = prometheus.NewDesc("fractal_part_file_bytes",
		"Size on disk of the files (database and write-ahead log) of the active parts, by kind, as last observed: at activation, then at most once a second after a commit that wrote.", []string{"kind"}, nil)
)

// Describe implements prometheus.Collector.
func (c *partsCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- activePartsDesc
	ch <- mailboxDesc
	ch <- fileBytesDesc
}

// Collect implements prometheus.Collector.
func (c *partsCollector) Collect(ch chan<- prometheus.Metric) {
	type sums struct{ active, queued, bytes float64 }
	by := make(map[*kindSpec]*sums, len(c.sys.tree.kinds))
	for _, k := range c.sys.tree.kinds {
		by[k] = &sums{}
	}
	c.sys.parts.Range(func(_, v any) bool {
		p := v.(*part)
		if sm := by[p.kind]; sm != nil {
			sm.active++
			sm.queued += float64(max(p.gauges.queued.Load(), 0))
			sm.bytes += float64(p.gauges.fileBytes.Load())
		}
		return true
	})
	for _, k := range c.sys.tree.kinds {
		sm := by[k]
		ch <- prometheus.MustNewConstMetric(activePartsDesc, prometheus.GaugeValue, sm.active, k.Name)
		ch <- prometheus.MustNewConstMetric(mailboxDesc, prometheus.GaugeValue, sm.queued, k.Name)
		ch <- prometheus.MustNewConstMetric(fileBytesDesc, prometheus.GaugeValue, sm.bytes, k.Name)
	}
}

// statFiles records the size of p's database and log files.
func (p *part) statFiles(now time.Time) {
	file := p.path.File(p.sys.dir)
	var n int64
	for _, f := range []string{file, file + "-wal"} {
		if fi, err := os.Stat(f); err == nil {
			n += fi.Size()
		} else if !errors.Is(err, os.ErrNotExist) {
			return
		}
	}
	p.gauges.fileBytes.Store(n)
	p.statAt = now
}

// km returns the metrics of p's kind, or nil without metrics (or for the
// guardian).
func (p *part) km() *kindMetrics {
	if p.kind == nil {
		return nil
	}
	return p.kind.m
}

// countMessage counts one message of p with outcome o.
func (p *part) countMessage(o outcome) {
	if km := p.km(); km != nil {
		km.messages[o].Inc()
	}
}
