package operator

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"k8s.io/client-go/util/workqueue"
)

// Registry holds the operators' Prometheus metrics, served on /metrics at --metrics-addr.
var Registry = prometheus.NewRegistry()

func init() {
	Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	workqueue.SetProvider(workqueueMetrics{})
}

// workqueueMetrics exposes client-go's workqueue metrics (depth, adds, latency, work
// duration, retries) for every named queue, as kube-controller-manager does.
type workqueueMetrics struct{}

const workqueueSubsystem = "workqueue"

func (workqueueMetrics) register(c prometheus.Collector) prometheus.Collector {
	if err := Registry.Register(c); err != nil {
		if already, ok := err.(prometheus.AlreadyRegisteredError); ok {
			return already.ExistingCollector
		}
		panic(err)
	}
	return c
}

func (m workqueueMetrics) gauge(name, help, queue string) prometheus.Gauge {
	vec := m.register(prometheus.NewGaugeVec(prometheus.GaugeOpts{Subsystem: workqueueSubsystem, Name: name, Help: help}, []string{"name"}))
	return vec.(*prometheus.GaugeVec).WithLabelValues(queue)
}

func (m workqueueMetrics) counter(name, help, queue string) prometheus.Counter {
	vec := m.register(prometheus.NewCounterVec(prometheus.CounterOpts{Subsystem: workqueueSubsystem, Name: name, Help: help}, []string{"name"}))
	return vec.(*prometheus.CounterVec).WithLabelValues(queue)
}

func (m workqueueMetrics) histogram(name, help, queue string) prometheus.Observer {
	vec := m.register(prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Subsystem: workqueueSubsystem, Name: name, Help: help,
		Buckets: prometheus.ExponentialBuckets(1e-6, 10, 10),
	}, []string{"name"}))
	return vec.(*prometheus.HistogramVec).WithLabelValues(queue)
}

func (m workqueueMetrics) NewDepthMetric(q string) workqueue.GaugeMetric {
	return m.gauge("depth", "Current depth of the workqueue.", q)
}

func (m workqueueMetrics) NewAddsMetric(q string) workqueue.CounterMetric {
	return m.counter("adds_total", "Total number of adds handled by the workqueue.", q)
}

func (m workqueueMetrics) NewLatencyMetric(q string) workqueue.HistogramMetric {
	return m.histogram("queue_duration_seconds", "How long an item stays in the workqueue before being requested.", q)
}

func (m workqueueMetrics) NewWorkDurationMetric(q string) workqueue.HistogramMetric {
	return m.histogram("work_duration_seconds", "How long processing an item from the workqueue takes.", q)
}

func (m workqueueMetrics) NewUnfinishedWorkSecondsMetric(q string) workqueue.SettableGaugeMetric {
	return m.gauge("unfinished_work_seconds", "Seconds of work in progress not yet observed by work_duration.", q)
}

func (m workqueueMetrics) NewLongestRunningProcessorSecondsMetric(q string) workqueue.SettableGaugeMetric {
	return m.gauge("longest_running_processor_seconds", "Seconds the longest running processor has been running.", q)
}

func (m workqueueMetrics) NewRetriesMetric(q string) workqueue.CounterMetric {
	return m.counter("retries_total", "Total number of retries handled by the workqueue.", q)
}

// RegisterCollector adds a controller's collector to Registry; the caller unregisters it
// when the controller stops (defer it), so a replica that loses and regains leadership in
// one process registers it again without a clash.
func RegisterCollector(c prometheus.Collector) (unregister func(), err error) {
	if err := Registry.Register(c); err != nil {
		return nil, fmt.Errorf("registering metrics: %w", err)
	}
	return func() { Registry.Unregister(c) }, nil
}
