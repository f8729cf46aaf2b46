// Command pause is the process of a pod's sandbox container: it holds the pod's
// namespaces open, reaps orphaned children when the pod shares its PID namespace, and exits
// on SIGINT or SIGTERM, like registry.k8s.io/pause. hack/nodeimages builds it into the
// sandbox image the local node's containerd runs, since no registry is reachable.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	children := make(chan os.Signal, 8)
	signal.Notify(children, syscall.SIGCHLD)
	for {
		select {
		case <-stop:
			os.Exit(0)
		case <-children:
			for {
				var ws syscall.WaitStatus
				pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
				if pid <= 0 || err != nil {
					break
				}
			}
		}
	}
}
