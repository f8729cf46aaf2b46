package localcluster

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/pgops/pgops/hack/kwok"
)

// ports of one cluster, all on 127.0.0.1.
type ports struct {
	etcdClient, etcdPeer, apiserver, kcm, scheduler int
}

// start runs the components in dependency order, waiting for each to be healthy.
func (c *Cluster) start(ctx context.Context) error {
	p, err := freePorts(5)
	if err != nil {
		return err
	}
	pt := ports{etcdClient: p[0], etcdPeer: p[1], apiserver: p[2], kcm: p[3], scheduler: p[4]}
	c.Server = fmt.Sprintf("https://127.0.0.1:%d", pt.apiserver)

	token, err := randomToken()
	if err != nil {
		return err
	}
	nodeIDs, err := nodeIdentities(c.opts.RealNodes)
	if err != nil {
		return err
	}
	if err := writeTokenFile(c.path("tokens.csv"), token, nodeIDs); err != nil {
		return err
	}
	if len(nodeIDs) > 0 {
		if err := c.writeKubeletClientPKI(); err != nil {
			return err
		}
	}
	if err := writeServiceAccountKey(c.path("pki", "sa.key"), c.path("pki", "sa.pub")); err != nil {
		return err
	}
	if err := os.WriteFile(c.path("stages.yaml"), kwok.Stages, 0o644); err != nil {
		return err
	}

	if err := c.startEtcd(ctx, pt); err != nil {
		return err
	}
	if err := c.startAPIServer(ctx, pt, token); err != nil {
		return err
	}
	if err := c.writeNodeKubeconfigs(nodeIDs); err != nil {
		return err
	}
	if err := c.startControllerManager(ctx, pt); err != nil {
		return err
	}
	if err := c.startScheduler(ctx, pt); err != nil {
		return err
	}
	if len(c.opts.RealNodes) == 0 {
		if err := c.startKwok(); err != nil {
			return err
		}
	}
	return c.bootstrap(ctx)
}

// run starts one component and records it for Stop.
func (c *Cluster) run(name string, args ...string) (*Process, error) {
	p, err := StartProcess(name, c.bin(name), args, c.LogDir, nil)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.procs[name] = p
	c.mu.Unlock()
	c.progress("started %s (pid %d), log %s", name, p.Pid(), p.logPath)
	return p, nil
}

func (c *Cluster) startEtcd(ctx context.Context, pt ports) error {
	clientURL := fmt.Sprintf("http://127.0.0.1:%d", pt.etcdClient)
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", pt.etcdPeer)
	p, err := c.run(compEtcd,
		"--name=default",
		"--data-dir="+c.path("etcd"),
		"--listen-client-urls="+clientURL,
		"--advertise-client-urls="+clientURL,
		"--listen-peer-urls="+peerURL,
		"--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=default="+peerURL,
		// A throwaway cluster needs no durability, and fsync is most of etcd's latency
		// on a busy CI disk.
		"--unsafe-no-fsync=true",
		"--log-level=warn",
	)
	if err != nil {
		return err
	}
	return p.WaitFor(ctx, "etcd health", func(ctx context.Context) (bool, error) {
		body, err := httpGet(ctx, http.DefaultClient, clientURL+"/health", "")
		return err == nil && strings.Contains(body, `"health":"true"`), err
	})
}

func (c *Cluster) startAPIServer(ctx context.Context, pt ports, token string) error {
	if err := c.writeAuditPolicy(); err != nil {
		return err
	}
	args := append([]string{
		fmt.Sprintf("--etcd-servers=http://127.0.0.1:%d", pt.etcdClient),
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		// Required with a loopback advertise address; there is one apiserver anyway.
		"--endpoint-reconciler-type=none",
		fmt.Sprintf("--secure-port=%d", pt.apiserver),
		// The apiserver writes a self-signed serving cert (apiserver.crt) here.
		"--cert-dir=" + c.path("pki"),
		"--token-auth-file=" + c.path("tokens.csv"),
		"--service-account-key-file=" + c.path("pki", "sa.pub"),
		"--service-account-signing-key-file=" + c.path("pki", "sa.key"),
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-cluster-ip-range=" + c.opts.ServiceCIDR,
		"--allow-privileged=true",
		// Only admin may read /debug/pprof; the scale benchmark takes CPU profiles from it
		// (PGOPS_PROFILE_DIR).
		"--profiling=true",
	}, c.auditFlags()...)
	args = append(args, c.nodeFlags()...)
	p, err := c.run(compAPIServer, args...)
	if err != nil {
		return err
	}
	insecure := insecureClient()
	err = p.WaitFor(ctx, "kube-apiserver /readyz", func(ctx context.Context) (bool, error) {
		body, err := httpGet(ctx, insecure, c.Server+"/readyz", token)
		return err == nil && body == "ok", err
	})
	if err != nil {
		return err
	}
	cfg, err := c.adminRESTConfig(ctx, token)
	if err != nil {
		return err
	}
	c.adminConfig = cfg
	if c.client, err = kubernetes.NewForConfig(cfg); err != nil {
		return err
	}
	return writeKubeconfig(c.Kubeconfig, cfg)
}

// adminRESTConfig returns the admin client config. It trusts the apiserver's
// self-signed certificate as CA if that verifies for 127.0.0.1, and falls back to
// skipping verification otherwise (it is a loopback-only throwaway cluster).
func (c *Cluster) adminRESTConfig(ctx context.Context, token string) (*rest.Config, error) {
	cfg := &rest.Config{
		Host:        c.Server,
		BearerToken: token,
		// Tests create objects in bursts; client-go's default 5 QPS only slows them.
		QPS:   100,
		Burst: 200,
	}
	ca, err := os.ReadFile(c.path("pki", "apiserver.crt"))
	if err == nil {
		withCA := rest.CopyConfig(cfg)
		withCA.CAData = ca
		if err := checkConfig(ctx, withCA); err == nil {
			return withCA, nil
		} else {
			c.progress("apiserver.crt does not verify (%v); kubeconfig skips TLS verification", err)
		}
	}
	cfg.Insecure = true
	return cfg, checkConfig(ctx, cfg)
}

// checkConfig makes one authenticated request with cfg.
func checkConfig(ctx context.Context, cfg *rest.Config) error {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	_, err = cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
	return err
}

func (c *Cluster) startControllerManager(ctx context.Context, pt ports) error {
	p, err := c.run(compKCM,
		"--kubeconfig="+c.Kubeconfig,
		"--authentication-kubeconfig="+c.Kubeconfig,
		"--authorization-kubeconfig="+c.Kubeconfig,
		"--bind-address=127.0.0.1",
		fmt.Sprintf("--secure-port=%d", pt.kcm),
		"--leader-elect=false",
		"--controllers="+c.controllers(),
		"--service-account-private-key-file="+c.path("pki", "sa.key"),
		// Published to every namespace as ConfigMap kube-root-ca.crt.
		"--root-ca-file="+c.path("pki", "apiserver.crt"),
		"--profiling=false",
		// Each StatefulSet sync and each watch the informers restart, so that a rollout the
		// StatefulSet controller is slow to start can be explained from its log (on 1.37 its
		// stale-cache check can hold a StatefulSet back: kubernetes/kubernetes#141250).
		"--vmodule=stateful_set=4,reflector=4",
	)
	if err != nil {
		return err
	}
	return waitHealthz(ctx, p, pt.kcm)
}

// nodeFlags are the API server's flags that depend on the kind of nodes: real kubelets
// are authorized by the Node authorizer and reached at their InternalIP with a client
// certificate; kwok's fake node would be tainted not-ready by TaintNodesByCondition with
// no node-lifecycle controller to lift the taint (it would mark kwok's nodes unhealthy),
// so the scheduler would place nothing.
func (c *Cluster) nodeFlags() []string {
	if len(c.opts.RealNodes) == 0 {
		return []string{"--authorization-mode=RBAC", "--disable-admission-plugins=TaintNodesByCondition"}
	}
	cert, key := c.kubeletClientCert()
	return []string{
		"--authorization-mode=Node,RBAC",
		"--enable-admission-plugins=NodeRestriction",
		"--kubelet-client-certificate=" + cert,
		"--kubelet-client-key=" + key,
		// Node names are not in any DNS here, and nothing may be looked up off the machine.
		"--kubelet-preferred-address-types=InternalIP",
	}
}

// controllers is kube-controller-manager's --controllers. nodeipam is off: pod ranges
// come from each node's CNI configuration. The token controllers are for legacy
// secret-based tokens; TokenRequest replaces them. With kwok's fake nodes,
// nodelifecycle would fight kwok, and the endpoint controllers are off: the API server
// refuses kwok's loopback pod IPs in Endpoints and EndpointSlices, so those controllers
// would retry forever, patching an event for every Service every few seconds and burning
// the API server's CPU (nothing routes Services to kwok's pods anyway). Real nodes need
// both: kube-proxy reads EndpointSlices, and a lost node must turn NotReady.
func (c *Cluster) controllers() string {
	ctrls := "*,-nodeipam,-serviceaccount-token,-bootstrapsigner,-tokencleaner"
	if len(c.opts.RealNodes) == 0 {
		ctrls += ",-nodelifecycle,-endpoints-controller,-endpointslice-controller,-endpointslice-mirroring-controller"
	}
	return ctrls
}

func (c *Cluster) startScheduler(ctx context.Context, pt ports) error {
	p, err := c.run(compScheduler,
		"--kubeconfig="+c.Kubeconfig,
		"--authentication-kubeconfig="+c.Kubeconfig,
		"--authorization-kubeconfig="+c.Kubeconfig,
		"--bind-address=127.0.0.1",
		fmt.Sprintf("--secure-port=%d", pt.scheduler),
		"--leader-elect=false",
		"--profiling=false",
	)
	if err != nil {
		return err
	}
	return waitHealthz(ctx, p, pt.scheduler)
}

// startKwok starts the fake kubelet. Whether it works shows in bootstrap, when the
// Node it manages turns Ready.
func (c *Cluster) startKwok() error {
	_, err := c.run(compKwok,
		"--kubeconfig="+c.Kubeconfig,
		"--config="+c.path("stages.yaml"),
		// Only nodes annotated like this are kwok's: real nodes can register without
		// kwok faking their pods.
		"--manage-nodes-with-annotation-selector="+kwokNodeAnnotation+"="+kwokNodeAnnotationValue,
		"--cidr="+c.opts.PodCIDR,
		"--node-ip=127.0.0.1",
	)
	return err
}

// waitHealthz waits for a component's /healthz on its secure port (an
// always-allowed path, so no credentials are needed; the cert is self-signed).
func waitHealthz(ctx context.Context, p *Process, port int) error {
	insecure := insecureClient()
	url := "https://127.0.0.1:" + strconv.Itoa(port) + "/healthz"
	return p.WaitFor(ctx, p.name+" /healthz", func(ctx context.Context) (bool, error) {
		body, err := httpGet(ctx, insecure, url, "")
		return err == nil && body == "ok", err
	})
}

// insecureClient is for health probes of self-signed endpoints before any CA is
// known. No keep-alives: each probe client is used briefly and then dropped.
func insecureClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true},
		DisableKeepAlives: true,
	}}
}

// httpGet returns the body of a GET that answered 200, or an error.
func httpGet(ctx context.Context, client *http.Client, url, bearer string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s: %s", url, resp.Status, strings.TrimSpace(string(b)))
	}
	return strings.TrimSpace(string(b)), nil
}
