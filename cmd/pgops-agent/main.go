// Command pgops-agent is the pgops instance agent, PID 1 of every database container
// (pkg/agent). It ships in the operator image; the pod's init container installs it into an
// emptyDir, from which the PostgreSQL image runs it:
//
//	pgops-agent install DEST          copy this binary to DEST (the init container)
//	pgops-agent run [--probe-port N]  prepare the data directory, run postgres, answer the
//	                                  kubelet's probes and the ops-manager's re-point
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"strconv"

	"k8s.io/klog/v2"

	"github.com/pgops/pgops/pkg/agent"
)

func main() {
	klog.InitFlags(nil)
	usage := func() {
		fmt.Fprintf(os.Stderr, "usage: %s install DEST | run [flags]\n", os.Args[0])
		flag.PrintDefaults()
	}
	flag.Usage = usage
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	switch cmd := os.Args[1]; cmd {
	case "install":
		if len(os.Args) != 3 {
			usage()
			os.Exit(2)
		}
		if err := agent.Install(os.Args[2]); err != nil {
			fmt.Fprintln(os.Stderr, "pgops-agent install:", err)
			os.Exit(1)
		}
	case "run":
		probePort := flag.Int("probe-port", agent.DefaultProbePort, "Port on every address of the pod where the kubelet's probes (HTTP GET "+
			agent.StartupPath+", "+agent.ReadinessPath+", "+agent.LivenessPath+") and the ops-manager's re-point (PUT "+agent.StandbyPassfilePath+") are answered.")
		if err := flag.CommandLine.Parse(os.Args[2:]); err != nil {
			os.Exit(2)
		}
		cfg, err := agent.ConfigFromEnv(os.Getenv)
		if err != nil {
			klog.ErrorS(err, "The container's environment is incomplete")
			klog.FlushAndExit(klog.ExitFlushTimeout, 1)
		}
		code, err := agent.Run(context.Background(), cfg, net.JoinHostPort("", strconv.Itoa(*probePort)))
		if err != nil {
			klog.ErrorS(err, "pgops-agent failed")
		}
		klog.FlushAndExit(klog.ExitFlushTimeout, code)
	default:
		usage()
		os.Exit(2)
	}
}
