package plugin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"

	kubedbv1 "github.com/pgops/pgops/pkg/apis/kubedb/v1"
	"github.com/pgops/pgops/pkg/credential"
	"github.com/pgops/pgops/pkg/dbaddr"
	"github.com/pgops/pgops/pkg/podstatus"
)

// How the plugin reaches a database's primary.
const (
	// connectAuto uses the primary Service from a pod of the cluster, else a port-forward.
	connectAuto = "auto"
	// connectService dials the primary Service's ClusterIP.
	connectService = "service"
	// connectPortForward forwards a local port to the primary pod through the API server,
	// as `kubectl port-forward` does: works wherever kubectl does.
	connectPortForward = "port-forward"
)

var connectModes = []string{connectAuto, connectService, connectPortForward}

func validateConnectMode(mode string) error {
	for _, m := range connectModes {
		if mode == m {
			return nil
		}
	}
	return fmt.Errorf("--connect %q: must be one of %s", mode, strings.Join(connectModes, ", "))
}

// endpoint is where a command reaches the primary, and how.
type endpoint struct {
	host  string
	port  int
	how   string
	close func()
}

// portForwardSetup bounds how long a port-forward may take to be ready.
const portForwardSetup = 10 * time.Second

// primaryEndpoint reaches pg's primary as mode says; lifetime bounds a port-forward, which
// ep.close ends sooner. The auth Secret's password goes to whatever answers there, so auto
// mode dials a ClusterIP only where it is surely this cluster's: from a pod of the
// cluster. Elsewhere an address that answers may be another network's (a VPN's 10.x) and
// would be handed the password.
func (c *Clients) primaryEndpoint(ctx, lifetime context.Context, pg *kubedbv1.Postgres, mode string, errOut io.Writer) (*endpoint, error) {
	if mode == connectService || (mode == connectAuto && c.inCluster()) {
		return c.serviceEndpoint(ctx, pg)
	}
	pod, err := c.primaryPod(ctx, pg)
	if err != nil {
		return nil, err
	}
	ep, err := c.portForward(ctx, lifetime, pod, errOut)
	if err != nil && mode == connectAuto {
		return nil, fmt.Errorf("%w; where this machine reaches the cluster's ClusterIPs, --connect service uses the primary Service instead", err)
	}
	return ep, err
}

// serviceEndpoint is the primary Service's ClusterIP.
func (c *Clients) serviceEndpoint(ctx context.Context, pg *kubedbv1.Postgres) (*endpoint, error) {
	svc, err := c.Kube.CoreV1().Services(pg.Namespace).Get(ctx, pg.Name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("reading the primary Service %s: %w", pg.Name, err)
	}
	host, port, err := dbaddr.PrimaryTarget(dbaddr.ModeClusterIP, svc)
	if err != nil {
		return nil, err
	}
	addr := net.JoinHostPort(host, strconv.Itoa(port))
	return &endpoint{host: host, port: port, how: "Service " + svc.Name + " (" + addr + ")", close: func() {}}, nil
}

// inCluster tells whether the plugin runs in a pod of the cluster it talks to.
func (c *Clients) inCluster() bool {
	cfg, err := rest.InClusterConfig()
	return err == nil && c.Config != nil && cfg.Host == c.Config.Host
}

// primaryPod is the Ready pod labelled primary.
func (c *Clients) primaryPod(ctx context.Context, pg *kubedbv1.Postgres) (*corev1.Pod, error) {
	pods, err := c.databasePods(ctx, pg)
	if err != nil {
		return nil, err
	}
	for i := range pods {
		if pods[i].Labels[kubedbv1.LabelRole] == kubedbv1.RolePrimary && podstatus.Ready(&pods[i]) {
			return &pods[i], nil
		}
	}
	return nil, fmt.Errorf("postgres %s has no Ready primary pod: `kubectl pgops status %s` shows its pods", pg.Name, pg.Name)
}

// databasePods are pg's pods, by the labels the provisioner gives them.
func (c *Clients) databasePods(ctx context.Context, pg *kubedbv1.Postgres) ([]corev1.Pod, error) {
	selector := labels.SelectorFromSet(labels.Set{kubedbv1.LabelName: kubedbv1.NameValue, kubedbv1.LabelInstance: pg.Name})
	list, err := c.Kube.CoreV1().Pods(pg.Namespace).List(ctx, metav1.ListOptions{LabelSelector: selector.String()})
	if err != nil {
		return nil, fmt.Errorf("listing the pods of postgres %s: %w", pg.Name, err)
	}
	return list.Items, nil
}

// portForward forwards a free local port to the pod's PostgreSQL port, over WebSockets where
// the API server speaks them, else SPDY, as kubectl port-forward does.
func (c *Clients) portForward(ctx, lifetime context.Context, pod *corev1.Pod, errOut io.Writer) (*endpoint, error) {
	if c.Config == nil {
		return nil, errors.New("port-forward needs a connection to the API server")
	}
	remote := kubedbv1.PostgresPort
	for _, ctr := range pod.Spec.Containers {
		for _, p := range ctr.Ports {
			if p.Name == "db" {
				remote = int(p.ContainerPort)
			}
		}
	}
	target := c.Kube.CoreV1().RESTClient().Post().Resource("pods").Namespace(pod.Namespace).Name(pod.Name).SubResource("portforward").URL()
	transport, upgrader, err := spdy.RoundTripperFor(c.Config)
	if err != nil {
		return nil, err
	}
	var dialer httpstream.Dialer = spdy.NewDialer(upgrader, &http.Client{Transport: transport}, http.MethodPost, target)
	if ws, err := portforward.NewSPDYOverWebsocketDialer(target, c.Config); err == nil {
		dialer = portforward.NewFallbackDialer(ws, dialer, func(err error) bool {
			return httpstream.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)
		})
	}
	fwCtx, cancel := context.WithCancel(lifetime)
	ready := make(chan struct{})
	fw, err := portforward.NewOnAddressesWithContext(fwCtx, dialer, []string{"127.0.0.1"}, []string{"0:" + strconv.Itoa(remote)}, ready, io.Discard, errOut)
	if err != nil {
		cancel()
		return nil, err
	}
	failed := make(chan error, 1)
	go func() { failed <- fw.ForwardPorts() }()
	select {
	case <-ready:
	case err := <-failed:
		cancel()
		if apierrors.IsForbidden(err) {
			return nil, fmt.Errorf("port-forward to pod %s: %w (your account needs create on pods/portforward)", pod.Name, err)
		}
		return nil, fmt.Errorf("port-forward to pod %s: %w", pod.Name, err)
	case <-ctx.Done():
		cancel()
		return nil, ctx.Err()
	case <-time.After(portForwardSetup):
		cancel()
		return nil, fmt.Errorf("port-forward to pod %s: not ready within %s", pod.Name, portForwardSetup)
	}
	ports, err := fw.GetPorts()
	if err != nil || len(ports) == 0 {
		cancel()
		return nil, fmt.Errorf("port-forward to pod %s: no local port: %v", pod.Name, err)
	}
	return &endpoint{host: "127.0.0.1", port: int(ports[0].Local), how: "port-forward to pod " + pod.Name, close: cancel}, nil
}

// superuser is the credential PostgreSQL accepts: pgops's credential record's, which holds it
// even while the auth Secret is being edited or was edited badly; the auth Secret's for a
// database without a record (or an account that may not read it).
func (c *Clients) superuser(ctx context.Context, pg *kubedbv1.Postgres) (secretName, user, password string, err error) {
	if rec, err := c.Kube.CoreV1().Secrets(pg.Namespace).Get(ctx, kubedbv1.CredentialRecordName(pg.Name), metav1.GetOptions{}); err == nil &&
		kubedbv1.IsCredentialRecordOf(rec, pg.Name) && rec.Annotations[kubedbv1.RecordDatabaseUIDAnnotation] == string(pg.UID) {
		user, password = string(rec.Data[corev1.BasicAuthUsernameKey]), string(rec.Data[corev1.BasicAuthPasswordKey])
		if user != "" && password != "" {
			return rec.Name, user, password, nil
		}
	}
	secretName = pg.ActiveAuthSecretName()
	if secretName == "" {
		secretName = pg.Name + "-auth"
	}
	sec, err := c.Kube.CoreV1().Secrets(pg.Namespace).Get(ctx, secretName, metav1.GetOptions{})
	switch {
	case apierrors.IsForbidden(err):
		return secretName, "", "", fmt.Errorf("reading the auth Secret %s: %w (your account needs get on that Secret)", secretName, err)
	case err != nil:
		return secretName, "", "", fmt.Errorf("reading the auth Secret %s: %w", secretName, err)
	}
	user, password = string(sec.Data[corev1.BasicAuthUsernameKey]), string(sec.Data[corev1.BasicAuthPasswordKey])
	if user == "" || password == "" {
		return secretName, "", "", fmt.Errorf("the auth Secret %s has no username or password", secretName)
	}
	return secretName, user, password, nil
}

// target is how the credential package logs in at ep.
func (ep *endpoint) target(user, password string) credential.Target {
	return credential.Target{
		Host: ep.host, Port: ep.port, User: user, Password: password,
		ConnectTimeout: 10 * time.Second, ApplicationName: "kubectl-pgops",
	}
}
