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
	}
	reg.MustRegister(m.bytes, m.reads, m.latency, m.rejects, m.sessions)
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
