package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	kubedbv1 "github.com/pgops/pgops/pkg/apis/kubedb/v1"
	opsv1alpha1 "github.com/pgops/pgops/pkg/apis/ops/v1alpha1"
	"github.com/pgops/pgops/pkg/credential"
	pgopsclient "github.com/pgops/pgops/pkg/generated/clientset/versioned"
	"github.com/pgops/pgops/test/localcluster"
	"github.com/pgops/pgops/test/testenv"
)

// story applies examples/ step by step and shows what the operators make of it.
type story struct {
	cluster     *localcluster.Cluster
	pgops       pgopsclient.Interface
	stepTimeout time.Duration
	// plugin is the kubectl-pgops binary.
	plugin string
}

const (
	demoNamespace = "demo"
	demoDatabase  = "ha-postgres"
)

func (s *story) run(ctx context.Context) error {
	say("A Postgres with one primary and two standbys (examples/10-postgres.yaml)")
	if err := s.apply(ctx, "00-namespace.yaml", "10-postgres.yaml"); err != nil {
		return err
	}
	if err := s.waitForPostgres(ctx, kubedbv1.DatabasePhaseReady); err != nil {
		return err
	}
	if err := s.kubectl(ctx, "get", "pg,pods,svc", "-n", demoNamespace); err != nil {
		return err
	}
	first, err := s.credential(ctx)
	if err != nil {
		return err
	}
	s.showLogin(ctx, "the generated credential", first, true)

	say("Rotate to a generated password (examples/20-rotate-auth-generated.yaml)")
	if err := s.rotate(ctx, "20-rotate-auth-generated.yaml", "pgops-rotate-auth-generated"); err != nil {
		return err
	}
	second, err := s.credential(ctx)
	if err != nil {
		return err
	}
	s.showLogin(ctx, "the new credential", second, true)
	s.showLogin(ctx, "the old credential", first, false)

	say("Rotate to a password the user chose (examples/30-user-auth-secret.yaml, 31-rotate-auth-user.yaml)")
	if err := s.apply(ctx, "30-user-auth-secret.yaml"); err != nil {
		return err
	}
	if err := s.rotate(ctx, "31-rotate-auth-user.yaml", "pgops-rotate-auth-user"); err != nil {
		return err
	}
	third, err := s.credential(ctx)
	if err != nil {
		return err
	}
	s.showLogin(ctx, "the user's credential", third, true)
	s.showLogin(ctx, "the previous credential", second, false)

	say("kubectl get pg,pgops -n demo")
	if err := s.kubectl(ctx, "get", "pg,pgops", "-n", demoNamespace); err != nil {
		return err
	}

	say("The same database through the kubectl plugin")
	return s.kubectlPgops(ctx, "status", demoDatabase, "-n", demoNamespace)
}

// kubectlPgops runs `kubectl pgops` as the admin.
func (s *story) kubectlPgops(ctx context.Context, args ...string) error {
	fmt.Printf("$ kubectl pgops %s\n", strings.Join(args, " "))
	cmd := exec.CommandContext(ctx, s.plugin, append([]string{"--kubeconfig", s.cluster.Kubeconfig}, args...)...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	return cmd.Run()
}

func (s *story) apply(ctx context.Context, files ...string) error {
	args := []string{"apply"}
	for _, f := range files {
		args = append(args, "-f", filepath.Join(testenv.Path("examples"), f))
	}
	return s.kubectl(ctx, args...)
}

func (s *story) kubectl(ctx context.Context, args ...string) error {
	fmt.Printf("$ kubectl %s\n", strings.Join(args, " "))
	out, err := s.cluster.Kubectl(ctx, args...)
	os.Stdout.Write(out)
	return err
}

func (s *story) rotate(ctx context.Context, file, name string) error {
	if err := s.apply(ctx, file); err != nil {
		return err
	}
	var req *opsv1alpha1.PostgresOpsRequest
	err := s.poll(ctx, func(ctx context.Context) (bool, error) {
		got, err := s.pgops.OpsV1alpha1().PostgresOpsRequests(demoNamespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		req = got
		switch got.Status.Phase {
		case opsv1alpha1.OpsRequestPhaseFailed, opsv1alpha1.OpsRequestPhaseSkipped:
			return false, fmt.Errorf("request %s ended %s", name, got.Status.Phase)
		}
		return got.Status.Phase == opsv1alpha1.OpsRequestPhaseSuccessful, nil
	})
	if req != nil {
		fmt.Printf("%s: %s\n", name, req.Status.Phase)
		for _, c := range req.Status.Conditions {
			fmt.Printf("  %-40s %-5s %s\n", c.Type, c.Status, c.Message)
		}
	}
	if err != nil {
		return err
	}
	return s.waitForPostgres(ctx, kubedbv1.DatabasePhaseReady)
}

func (s *story) waitForPostgres(ctx context.Context, phase kubedbv1.DatabasePhase) error {
	fmt.Printf("waiting for Postgres %s to be %s ...\n", demoDatabase, phase)
	return s.poll(ctx, func(ctx context.Context) (bool, error) {
		pg, err := s.pgops.KubedbV1().Postgreses(demoNamespace).Get(ctx, demoDatabase, metav1.GetOptions{})
		return err == nil && pg.Status.Phase == phase, nil
	})
}

func (s *story) poll(ctx context.Context, cond wait.ConditionWithContextFunc) error {
	return wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, s.stepTimeout, true, cond)
}

type login struct{ username, password string }

// credential reads the credential in the database's current auth Secret.
func (s *story) credential(ctx context.Context) (login, error) {
	pg, err := s.pgops.KubedbV1().Postgreses(demoNamespace).Get(ctx, demoDatabase, metav1.GetOptions{})
	if err != nil {
		return login{}, err
	}
	secret, err := s.cluster.Client().CoreV1().Secrets(demoNamespace).Get(ctx, pg.Spec.AuthSecret.Name, metav1.GetOptions{})
	if err != nil {
		return login{}, err
	}
	return login{string(secret.Data["username"]), string(secret.Data["password"])}, nil
}

// showLogin logs in through the primary Service and says whether that worked as expected.
// It never prints the password.
func (s *story) showLogin(ctx context.Context, what string, l login, wantOK bool) {
	svc, err := s.cluster.Client().CoreV1().Services(demoNamespace).Get(ctx, demoDatabase, metav1.GetOptions{})
	if err != nil {
		fmt.Printf("  cannot find the primary Service: %v\n", err)
		return
	}
	target := credential.Target{Host: svc.Spec.ClusterIP, Port: kubedbv1.PostgresPort, SSLMode: "disable"}
	ok, err := credential.VerifyLogin(ctx, target, l.username, l.password)
	verdict := map[bool]string{true: "logs in", false: "is refused"}[ok]
	if err != nil {
		verdict = "could not be checked: " + err.Error()
	}
	mark := "ok"
	if err != nil || ok != wantOK {
		mark = "UNEXPECTED"
	}
	fmt.Printf("  [%s] login as %q with %s through %s:%d %s\n", mark, l.username, what, target.Host, target.Port, verdict)
}
