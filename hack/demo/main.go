// Command demo runs the whole of pgops on a local control plane and walks through its
// story: a Postgres becomes Ready, its credential is rotated to a generated one and then
// to a user's, and the new credential logs in while the old one is refused. It tears
// everything down on exit or Ctrl-C.
//
//	make demo                     # builds what it needs, then runs this
//	go run ./hack/demo --wait=false
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	pgopsclient "github.com/pgops/pgops/pkg/generated/clientset/versioned"
	"github.com/pgops/pgops/test/localcluster"
	"github.com/pgops/pgops/test/nodeagent"
	"github.com/pgops/pgops/test/testenv"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "demo: %v\n", err)
		os.Exit(1)
	}
}

func run() error {
	waitForInterrupt := flag.Bool("wait", true, "after the story, keep the cluster up until Ctrl-C")
	workDir := flag.String("workdir", "", "directory for the cluster's files and the operators' logs (default: a temp dir)")
	stepTimeout := flag.Duration("step-timeout", 5*time.Minute, "how long to wait for each step of the story")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	if *workDir == "" {
		dir, err := os.MkdirTemp("", "pgops-demo-")
		if err != nil {
			return err
		}
		*workDir = dir
		defer os.RemoveAll(dir)
	}
	say("Starting a local control plane (etcd, kube-apiserver, controller-manager, scheduler) and a node agent that runs pods as real PostgreSQL processes")
	// Each pod gets a network namespace on the node agent's pod network, whose Service
	// range the API server hands ClusterIPs from.
	network, err := nodeagent.ReserveNetwork()
	if err != nil {
		return err
	}
	defer network.Release()
	cluster, err := localcluster.Start(ctx, localcluster.Options{
		WorkDir:      filepath.Join(*workDir, "cluster"),
		SkipFakeNode: true, // database pods run on the node agent, as real PostgreSQL processes
		ServiceCIDR:  network.ServiceCIDR.String(),
	})
	if err != nil {
		return err
	}
	defer func() {
		say("Tearing down")
		_ = cluster.Stop()
	}()
	agent, err := nodeagent.Start(ctx, nodeagent.Options{Client: cluster.Client(), RootDir: filepath.Join(*workDir, "node"), Network: network})
	if err != nil {
		return err
	}
	defer agent.Stop()
	pgops, err := pgopsclient.NewForConfig(cluster.AdminConfig())
	if err != nil {
		return err
	}

	say("Installing the CRDs and the operators' RBAC from manifests/")
	if err := testenv.InstallCRDsAndRBAC(ctx, cluster); err != nil {
		return err
	}

	say("Running both operators as local processes, with their ServiceAccounts' tokens")
	binaries, err := testenv.BuildOperators(filepath.Join(*workDir, "bin"))
	if err != nil {
		return err
	}
	for _, name := range []string{"provisioner", "ops-manager"} {
		cfg, err := cluster.ServiceAccountConfig(ctx, "pgops-system", "pgops-"+name)
		if err != nil {
			return err
		}
		logPath := filepath.Join(*workDir, name+".log")
		logFile, err := os.Create(logPath)
		if err != nil {
			return err
		}
		defer logFile.Close()
		op, err := testenv.StartOperator(name, binaries[name], cfg, *workDir, logFile, "--leader-elect=false")
		if err != nil {
			return err
		}
		defer op.Stop(30 * time.Second)
		if err := op.WaitReady(ctx); err != nil {
			return err
		}
		fmt.Printf("  %s ready (log: %s)\n", name, logPath)
	}

	story := &story{cluster: cluster, pgops: pgops, stepTimeout: *stepTimeout, plugin: binaries["kubectl-pgops"]}
	if err := story.run(ctx); err != nil {
		return err
	}

	if *waitForInterrupt {
		say("The cluster stays up until Ctrl-C. In another shell:")
		fmt.Printf(`  export KUBECONFIG=%s
  export PATH=%s:%s:$PATH   # kubectl, and kubectl-pgops (the kubectl pgops plugin)
  kubectl pgops status ha-postgres -n demo
  kubectl pgops psql ha-postgres -n demo
  kubectl pgops rotate-auth ha-postgres -n demo --wait
`, cluster.Kubeconfig, filepath.Dir(cluster.KubectlPath), filepath.Dir(binaries["kubectl-pgops"]))
		<-ctx.Done()
	}
	return nil
}

func say(msg string) { fmt.Printf("\n==> %s\n", msg) }
