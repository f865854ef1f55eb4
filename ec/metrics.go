package ec

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics count a Reader's stripes and degraded reads. A nil *Metrics
// records nothing.
type Metrics struct {
	stripes     prometheus.Counter
	degraded    prometheus.Counter
	shards      *prometheus.CounterVec
	rebuilt     prometheus.Counter
	unavailable prometheus.Counter
}

// NewMetrics creates the erasure-coding metrics and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		stripes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "blockxfer_ec_stripes_read_total",
			Help: "Stripes of striped volumes read.",
		}),
		degraded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "blockxfer_ec_degraded_stripes_total",
			Help: "Stripes read by reconstruction from parity.",
		}),
		shards: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "blockxfer_ec_unusable_shards_total",
			Help: "Shards a read could not use, by reason (down, timeout, checksum, stale, error).",
		}, []string{"reason"}),
		rebuilt: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "blockxfer_ec_reconstructed_bytes_total",
			Help: "Volume bytes placed by reconstruction instead of fetched.",
		}),
		unavailable: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "blockxfer_ec_unavailable_stripes_total",
			Help: "Stripes that could not be read: more than m shards unavailable.",
		}),
	}
	reg.MustRegister(m.stripes, m.degraded, m.shards, m.rebuilt, m.unavailable)
	return m
}

func (m *Metrics) read(res *ReadResult, err error) {
	if m == nil {
		return
	}
	m.stripes.Add(float64(res.Stripes))
	m.degraded.Add(float64(len(res.Degraded)))
	for _, d := range res.Degraded {
		for _, f := range d.Missing {
			m.shards.WithLabelValues(f.Reason).Inc()
		}
	}
	if errors.Is(err, ErrUnavailable) {
		m.unavailable.Inc()
	}
}

func (m *Metrics) reconstructed(n int64) {
	if m != nil {
		m.rebuilt.Add(float64(n))
	}
}
