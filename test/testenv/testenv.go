// Package testenv sets up what pgops's integration and end-to-end tests share: a local
// control plane with pgops's CRDs and RBAC installed, and the operators' binaries.
package testenv

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"testing"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/pgops/pgops/internal/imagebuild"
	"github.com/pgops/pgops/test/kubenode"
	"github.com/pgops/pgops/test/localcluster"
)

// CRDNames are the CustomResourceDefinitions in manifests/crds.
var CRDNames = []string{"postgreses.kubedb.com", "postgresopsrequests.ops.kubedb.com"}

// RepoRoot is the checkout's top directory.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// Path joins elem to the checkout's top directory.
func Path(elem ...string) string { return filepath.Join(append([]string{RepoRoot()}, elem...)...) }

// Main starts a local control plane, installs pgops's CRDs and RBAC, runs the package's
// tests with it and tears it down. A missing binary fails the run: these tests never skip
// silently.
func Main(m *testing.M, cluster **localcluster.Cluster, opts localcluster.Options) {
	code := func() int {
		flag.Parse()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		if opts.Progress == nil && testing.Verbose() {
			opts.Progress = os.Stderr
		}
		c, err := localcluster.Start(ctx, opts)
		if err != nil {
			fmt.Fprintln(os.Stderr, "starting the local control plane:", err)
			return 1
		}
		defer c.Stop()
		if err := InstallCRDsAndRBAC(ctx, c); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		*cluster = c
		return m.Run()
	}()
	os.Exit(code)
}

// InstallCRDsAndRBAC applies manifests/ except the Deployments (tests run the operators
// as local processes): the CRDs, RBAC and admission policies, and waits until the CRDs are
// served.
func InstallCRDsAndRBAC(ctx context.Context, c *localcluster.Cluster) error {
	out, err := c.Kubectl(ctx, "apply",
		"-f", Path("manifests", "namespace.yaml"),
		"-f", Path("manifests", "crds"),
		"-f", Path("manifests", "rbac"),
		"-f", Path("manifests", "policies"))
	if err != nil {
		return fmt.Errorf("kubectl apply manifests: %v: %s", err, out)
	}
	return WaitForCRDs(ctx, c)
}

// WaitForCRDs waits until every pgops CRD is Established and its resource is in discovery:
// the API server adds a group to discovery only after it has seen Established itself, and
// kubectl maps a kind through discovery.
func WaitForCRDs(ctx context.Context, c *localcluster.Cluster) error {
	client, err := apiextensionsclient.NewForConfig(c.AdminConfig())
	if err != nil {
		return err
	}
	return wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		for _, name := range CRDNames {
			crd, err := client.ApiextensionsV1().CustomResourceDefinitions().Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return false, nil
			}
			established := false
			for _, cond := range crd.Status.Conditions {
				if cond.Type == apiextensionsv1.Established && cond.Status == apiextensionsv1.ConditionTrue {
					established = true
				}
			}
			if !established {
				return false, nil
			}
			version := crd.Spec.Group + "/" + crd.Spec.Versions[0].Name
			for _, v := range crd.Spec.Versions {
				if v.Storage {
					version = crd.Spec.Group + "/" + v.Name
				}
			}
			resources, err := client.Discovery().ServerResourcesForGroupVersion(version)
			if err != nil || !slices.ContainsFunc(resources.APIResources, func(r metav1.APIResource) bool {
				return r.Name == crd.Spec.Names.Plural
			}) {
				return false, nil
			}
		}
		return true, nil
	})
}

// BuildOperators builds both operators, the agent and the kubectl plugin into dir as the
// operator image has them (static, the Dockerfile's flags), and returns the path of each
// binary by name. BuildOperatorImage puts the same binaries into an image.
func BuildOperators(dir string) (map[string]string, error) {
	commands := append(slices.Clone(imagebuild.Binaries), "kubectl-pgops")
	if err := imagebuild.BuildCommands(context.Background(), os.Getenv("GO"), RepoRoot(), dir, "linux", runtime.GOARCH, commands...); err != nil {
		return nil, err
	}
	paths := map[string]string{}
	for _, c := range commands {
		paths[c] = filepath.Join(dir, c)
	}
	return paths, nil
}

// OperatorImage is the name under which the local nodes hold the operator image built from
// the working tree: a registry nobody can pull from, so a node without it fails to start
// the pod rather than going to the network.
const OperatorImage = "pgops.local/pgops:dev"

// BuildOperatorImage writes the operator image OperatorImage, with the binaries
// BuildOperators put into binDir, to the archive file, for the nodes to import
// (kubenode.Options.Images).
func BuildOperatorImage(binDir, file string) error {
	img, err := imagebuild.Build(imagebuild.Options{BinaryDir: binDir, Ref: OperatorImage, Arch: runtime.GOARCH})
	if err != nil {
		return err
	}
	return imagebuild.WriteArchive(file, OperatorImage, img)
}

// NodeImageFlags are the provisioner's image flags for the local nodes (test/kubenode):
// PostgreSQL 15 from Debian's packages as pgops.local/postgres:15, and the agent from
// OperatorImage, the flags a user of a private registry or a mirror sets too.
func NodeImageFlags() []string {
	return []string{
		"--image-registry=" + kubenode.PostgresImageRegistry,
		"--image-tag-template=" + kubenode.PostgresImageTagTemplate,
		"--agent-image=" + OperatorImage,
	}
}
