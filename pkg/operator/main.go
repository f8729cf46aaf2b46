package operator

import (
	"context"
	"flag"
	"os"
	"os/signal"
	"syscall"

	"k8s.io/klog/v2"
)

// Main parses the flags of the operator called name, runs it until SIGTERM or SIGINT, and
// exits the process with klog flushed. A second signal exits at once.
func Main(name string, run RunFunc) {
	klog.InitFlags(nil)
	opts := NewOptions(name)
	opts.AddFlags(flag.CommandLine)
	flag.Parse()

	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-ctx.Done()
		cancel()
		// Restore default handling so a second signal kills a stuck shutdown.
		signal.Reset(syscall.SIGTERM, syscall.SIGINT)
	}()

	klog.InfoS("Starting", "operator", name, "namespace", opts.InformerNamespace(), "workers", opts.Workers)
	if err := Run(ctx, opts, run); err != nil {
		klog.ErrorS(err, "Operator failed", "operator", name)
		klog.FlushAndExit(klog.ExitFlushTimeout, 1)
	}
	klog.InfoS("Stopped", "operator", name)
	klog.Flush()
	os.Exit(0)
}
