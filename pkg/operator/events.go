package operator

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"

	pgopsscheme "github.com/pgops/pgops/pkg/generated/clientset/versioned/scheme"
)

// pgops's kinds join client-go's scheme when the package loads, before any client decodes
// with it: adding them later, as a controller starts, wrote the scheme's maps while the
// leader elector's renewals read them (a fatal concurrent map access).
func init() {
	utilruntime.Must(pgopsscheme.AddToScheme(scheme.Scheme))
}

// NewEventRecorder returns a recorder whose events go to the API server (and to the
// structured log) with source component, for objects of Kubernetes's and pgops's kinds. The
// broadcaster stops when ctx is done.
func NewEventRecorder(ctx context.Context, client kubernetes.Interface, component string) record.EventRecorder {
	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	broadcaster.StartStructuredLogging(0)
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: client.CoreV1().Events("")})
	go func() {
		<-ctx.Done()
		broadcaster.Shutdown()
	}()
	return broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: component})
}
