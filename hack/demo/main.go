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
	"github.com/pgops/pgops/test/kubenode"
	"github.com/pgops/pgops/test/localcluster"
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
	say("Starting a local control plane (etcd, kube-apiserver, controller-manager, scheduler) and two real nodes (kubelet, containerd, runc, kube-proxy)")
	say("Building the operators, the agent and the operator image")
	binaries, err := testenv.BuildOperators(filepath.Join(*workDir, "bin"))
	if err != nil {
		return err
	}
	operatorImage := filepath.Join(*workDir, "pgops-image.tar")
	if err := testenv.BuildOperatorImage(filepath.Join(*workDir, "bin"), operatorImage); err != nil {
		return err
	}
	nodes, err := kubenode.Reserve(kubenode.Options{Count: 2, RootDir: filepath.Join(*workDir, "nodes"),
		Images: append(kubenode.DefaultImages(), operatorImage)})
	if err != nil {
		return err
	}
	cluster, err := localcluster.Start(ctx, nodes.ClusterOptions(localcluster.Options{WorkDir: filepath.Join(*workDir, "cluster")}))
	if err != nil {
		nodes.Stop()
		return err
	}
	defer func() {
		say("Tearing down")
		nodes.Stop()
		_ = cluster.Stop()
	}()
	if err := nodes.Start(ctx, cluster); err != nil {
		return err
	}
	pgops, err := pgopsclient.NewForConfig(cluster.AdminConfig())
	if err != nil {
		return err
	}

	say("Installing the CRDs and the operators' RBAC from manifests/")
	if err := testenv.InstallCRDsAndRBAC(ctx, cluster); err != nil {
		return err
	}

	say("Running both operators as local processes, with their ServiceAccounts' tokens")
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
		args := []string{"--leader-elect=false"}
		if name == "provisioner" {
			args = append(args, testenv.NodeImageFlags()...)
		}
		op, err := testenv.StartOperator(name, binaries[name], cfg, *workDir, logFile, args...)
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
