package engine

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the server's Prometheus metrics. A nil *Metrics records
// nothing, so the engine can be used without Prometheus.
type Metrics struct {
	bytes    *prometheus.CounterVec
	reads    *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	rejects  *prometheus.CounterVec
	sessions prometheus.Gauge
	paths    *prometheus.CounterVec
}

// NewMetrics creates the server metrics and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "blockd_sent_bytes_total",
			Help: "Payload bytes sent on data connections.",
		}, []string{"transport"}),
		reads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "blockd_reads_total",
			Help: "Read requests served, by transport and outcome (done, the error code, or session-lost: a data connection broke under it).",
		}, []string{"transport", "outcome"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "blockd_read_duration_seconds",
			Help:    "Time from a read's arrival to its last byte sent.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 18),
		}, []string{"transport"}),
		rejects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "blockd_rejected_connections_total",
			Help: "Connections refused, by reason (preamble, auth, data-token, busy).",
		}, []string{"reason"}),
		sessions: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "blockd_sessions",
			Help: "Client sessions open.",
		}),
		paths: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "blockd_read_paths_total",
			Help: "Reads announced, by the kind of data connection that carried them (devmem, devmem-emulated, plain, both kinds: mixed, or undeclared for a client that declares none) and why a devmem session's read went plain (small-read, plain-requested; empty otherwise).",
		}, []string{"path", "reason"}),
	}
	reg.MustRegister(m.bytes, m.reads, m.latency, m.rejects, m.sessions, m.paths)
	return m
}

func (m *Metrics) sent(transport string, n int64) {
	if m != nil {
		m.bytes.WithLabelValues(transport).Add(float64(n))
	}
}

func (m *Metrics) read(transport, outcome string, d time.Duration) {
	if m != nil {
		m.reads.WithLabelValues(transport, outcome).Inc()
		m.latency.WithLabelValues(transport).Observe(d.Seconds())
	}
}

func (m *Metrics) path(path, reason string) {
	if m != nil {
		m.paths.WithLabelValues(path, reason).Inc()
	}
}

func (m *Metrics) rejected(reason string) {
	if m != nil {
		m.rejects.WithLabelValues(reason).Inc()
	}
}

func (m *Metrics) sessionsUp() {
	if m != nil {
		m.sessions.Inc()
	}
}

func (m *Metrics) sessionsDown() {
	if m != nil {
		m.sessions.Dec()
	}
}

// ClientMetrics are a client's Prometheus metrics (Config.Metrics). A nil
// *ClientMetrics records nothing.
type ClientMetrics struct {
	reads *prometheus.CounterVec
}

// NewClientMetrics creates the client metrics and registers them with reg.
func NewClientMetrics(reg prometheus.Registerer) *ClientMetrics {
	m := &ClientMetrics{
		reads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "blockxfer_client_reads_total",
			Help: "Reads ended, by the transport that received them (devmem, devmem-emulated, tcp, or two joined by +) and the code of the fallback reason (empty: none).",
		}, []string{"transport", "reason"}),
	}
	reg.MustRegister(m.reads)
	return m
}

func (m *ClientMetrics) read(transport, reason string) {
	if m != nil {
		m.reads.WithLabelValues(transport, reason).Inc()
	}
}
