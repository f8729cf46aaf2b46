// Command localcluster runs a local Kubernetes control plane (see test/localcluster)
// until interrupted:
//
//	go run ./hack/localcluster --workdir /tmp/pgops-cluster --env-file /tmp/pgops-cluster.env
//
// It prints the admin kubeconfig path, writes "export KUBECONFIG=..." (and a PATH with
// the matching kubectl) to --env-file,
// and tears everything down on SIGINT or SIGTERM.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/pgops/pgops/test/localcluster"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "localcluster: %v\n", err)
		os.Exit(1)
	}
}

func run() error {
	var opts localcluster.Options
	var envFile string
	flag.StringVar(&opts.WorkDir, "workdir", "", "directory for etcd data, kubeconfig and logs (default: a temp dir)")
	flag.BoolVar(&opts.KeepWorkDir, "keep-workdir", false, "keep the work directory (logs, kubeconfig) after shutdown")
	flag.StringVar(&envFile, "env-file", "", "write 'export KUBECONFIG=...' to this file once the cluster is up")
	flag.StringVar(&opts.BinDir, "bin-dir", "", "directory with the control-plane binaries (default: $K8S_BIN_DIR or the hack/install-k8s-bins.sh cache)")
	flag.StringVar(&opts.ServiceCIDR, "service-cidr", localcluster.DefaultServiceCIDR, "Service ClusterIP range")
	flag.StringVar(&opts.PodCIDR, "pod-cidr", localcluster.DefaultPodCIDR, "range kwok assigns pod IPs from")
	flag.DurationVar(&opts.StartTimeout, "start-timeout", 3*time.Minute, "give up starting after this long")
	flag.Parse()
	if flag.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", flag.Args())
	}
	opts.Progress = os.Stderr

	// Signals during startup cancel it; afterwards they start the teardown.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	c, err := localcluster.Start(ctx, opts)
	if err != nil {
		return err
	}
	defer func() {
		if err := c.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "localcluster: teardown: %v\n", err)
		}
	}()

	if envFile != "" {
		// PATH too: the matching kubectl is in the bin dir, and machines that run
		// this often have none installed.
		env := fmt.Sprintf("export KUBECONFIG=%s\nexport PATH=%s:\"$PATH\"\n",
			shellQuote(c.Kubeconfig), shellQuote(filepath.Dir(c.KubectlPath)))
		if err := os.WriteFile(envFile, []byte(env), 0o644); err != nil {
			return fmt.Errorf("write env file: %w", err)
		}
		// A stale env file must not point at a cluster that is gone.
		defer os.Remove(envFile)
	}
	fmt.Println(c.Kubeconfig)
	fmt.Fprintf(os.Stderr, "cluster up: export KUBECONFIG=%s (kubectl: %s); Ctrl-C to stop\n", c.Kubeconfig, c.KubectlPath)

	<-ctx.Done()
	fmt.Fprintln(os.Stderr, "shutting down")
	return nil
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
