package controller

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics holds kube-proxy's sync metrics, under kube-proxy's names, so
// that existing dashboards keep working.
type Metrics struct {
	syncDuration        prometheus.Histogram
	fullSyncDuration    prometheus.Histogram
	partialSyncDuration prometheus.Histogram
	lastSync            prometheus.Gauge
	lastQueued          prometheus.Gauge
	endpointPending     prometheus.Gauge
	endpointTotal       prometheus.Counter
	servicePending      prometheus.Gauge
	serviceTotal        prometheus.Counter
	syncFailures        prometheus.Counter
	networkProgramming  prometheus.Histogram
}

// NewMetrics registers the metrics with reg. failureMetric is the
// backend's failure counter name ("sync_proxy_rules_nftables_sync_failures_total"
// or "sync_proxy_rules_iptables_restore_failures_total", as in kube-proxy).
func NewMetrics(reg prometheus.Registerer, failureMetric string) *Metrics {
	buckets := prometheus.ExponentialBuckets(0.001, 2, 15)
	m := &Metrics{
		syncDuration: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "kubeproxy", Name: "sync_proxy_rules_duration_seconds",
			Help: "SyncProxyRules latency in seconds", Buckets: buckets}),
		fullSyncDuration: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "kubeproxy", Name: "sync_full_proxy_rules_duration_seconds",
			Help: "SyncProxyRules latency in seconds for full resyncs", Buckets: buckets}),
		partialSyncDuration: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "kubeproxy", Name: "sync_partial_proxy_rules_duration_seconds",
			Help: "SyncProxyRules latency in seconds for partial resyncs", Buckets: buckets}),
		lastSync: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "kubeproxy", Name: "sync_proxy_rules_last_timestamp_seconds",
			Help: "The last time proxy rules were successfully synced"}),
		lastQueued: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "kubeproxy", Name: "sync_proxy_rules_last_queued_timestamp_seconds",
			Help: "The last time a sync of proxy rules was queued"}),
		endpointPending: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "kubeproxy", Name: "sync_proxy_rules_endpoint_changes_pending",
			Help: "Pending proxy rules Endpoint changes"}),
		endpointTotal: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "kubeproxy", Name: "sync_proxy_rules_endpoint_changes_total",
			Help: "Cumulative proxy rules Endpoint changes"}),
		servicePending: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "kubeproxy", Name: "sync_proxy_rules_service_changes_pending",
			Help: "Pending proxy rules Service changes"}),
		serviceTotal: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "kubeproxy", Name: "sync_proxy_rules_service_changes_total",
			Help: "Cumulative proxy rules Service changes"}),
		syncFailures: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "kubeproxy", Name: failureMetric,
			Help: "Cumulative proxy rules sync failures"}),
		networkProgramming: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "kubeproxy", Name: "network_programming_duration_seconds",
			Help:    "In Cluster Network Programming Latency in seconds",
			Buckets: programmingBuckets()}),
	}
	reg.MustRegister(m.syncDuration, m.fullSyncDuration, m.partialSyncDuration, m.lastSync, m.lastQueued,
		m.endpointPending, m.endpointTotal, m.servicePending, m.serviceTotal, m.syncFailures, m.networkProgramming)
	return m
}

func (m *Metrics) changeQueued(kind string) {
	m.lastQueued.SetToCurrentTime()
	switch kind {
	case "endpointslice":
		m.endpointPending.Inc()
		m.endpointTotal.Inc()
	case "service":
		m.servicePending.Inc()
		m.serviceTotal.Inc()
	}
}

func (m *Metrics) synced(full bool, d time.Duration, err error) {
	if err != nil {
		m.syncFailures.Inc()
		return
	}
	m.syncDuration.Observe(d.Seconds())
	if full {
		m.fullSyncDuration.Observe(d.Seconds())
	} else {
		m.partialSyncDuration.Observe(d.Seconds())
	}
	m.lastSync.SetToCurrentTime()
	m.endpointPending.Set(0)
	m.servicePending.Set(0)
}

// programmingBuckets are kube-proxy's: 0.25 s steps to 0.5 s, 1 s steps to
// a minute, then 5 s to two minutes and 30 s to five.
func programmingBuckets() []float64 {
	b := []float64{0.25, 0.5}
	for v := 1.0; v <= 59; v++ {
		b = append(b, v)
	}
	for v := 60.0; v < 120; v += 5 {
		b = append(b, v)
	}
	for v := 120.0; v <= 300; v += 30 {
		b = append(b, v)
	}
	return b
}

// RegisterWatchMetrics registers, for each resource the source watches
// (label resource: services, endpointslices, nodes),
// svcproxy_informer_lists_total (complete lists received: the first and
// every relist) and svcproxy_informer_watch_expired_total (watches the API
// server answered with 410 Gone, each followed by a relist).
func RegisterWatchMetrics(reg prometheus.Registerer, s *InformerSource) {
	for kind, res := range Resources {
		labels := prometheus.Labels{"resource": res}
		reg.MustRegister(
			prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "svcproxy", Name: "informer_lists_total",
				Help:        "Complete lists of a resource the informers received: the first one and every relist",
				ConstLabels: labels}, func() float64 { return float64(s.WatchStats()[kind].Lists) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "svcproxy", Name: "informer_watch_expired_total",
				Help:        "Watches of a resource the API server answered with 410 Gone (resource version too old); each is followed by a relist",
				ConstLabels: labels}, func() float64 { return float64(s.WatchStats()[kind].Expired) }),
		)
	}
}

// programmed records how long a change took from its trigger to the kernel.
func (m *Metrics) programmed(d time.Duration) { m.networkProgramming.Observe(d.Seconds()) }
