package main

import (
	"context"
	"fmt"
	"time"

	"github.com/pgops/pgops/test/localcluster"
	"github.com/pgops/pgops/test/testenv"
)

// story applies examples/ and shows what the operators make of it.
type story struct {
	cluster     *localcluster.Cluster
	stepTimeout time.Duration
}

func (s *story) run(ctx context.Context) error {
	say("kubectl apply -f examples/")
	out, err := s.cluster.Kubectl(ctx, "apply", "-f", testenv.Path("examples"))
	fmt.Print(string(out))
	if err != nil {
		return err
	}
	say("kubectl get pg,pgops -n demo")
	out, err = s.cluster.Kubectl(ctx, "get", "pg,pgops", "-n", "demo")
	fmt.Print(string(out))
	return err
}
