package plugin

import (
	"context"
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
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"

	kubedbv1 "github.com/pgops/pgops/pkg/apis/kubedb/v1"
	"github.com/pgops/pgops/pkg/credential"
	"github.com/pgops/pgops/pkg/dbaddr"
)

// How the plugin reaches a database's primary.
const (
	// connectAuto uses the primary Service when its ClusterIP answers (in a pod, on a node,
	// next to `make demo`), else a port-forward.
	connectAuto = "auto"
	// connectService dials the primary Service's ClusterIP.
	connectService = "service"
	// connectPortForward forwards a local port to the primary pod through the API server,
	// as `kubectl port-forward` does: works wherever kubectl does.
	connectPortForward = "port-forward"
)

var connectModes = []string{connectAuto, connectService, connectPortForward}

// serviceProbeTimeout bounds the auto mode's check that the ClusterIP answers.
const serviceProbeTimeout = time.Second

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

// primaryEndpoint reaches pg's primary as mode says.
func (c *Clients) primaryEndpoint(ctx context.Context, pg *kubedbv1.Postgres, mode string, errOut io.Writer) (*endpoint, error) {
	if mode != connectPortForward {
		svc, err := c.Kube.CoreV1().Services(pg.Namespace).Get(ctx, pg.Name, metav1.GetOptions{})
		if err != nil {
			return nil, fmt.Errorf("reading the primary Service %s: %w", pg.Name, err)
		}
		host, port, err := dbaddr.PrimaryTarget(dbaddr.ModeClusterIP, svc)
		if err != nil {
			return nil, err
		}
		addr := net.JoinHostPort(host, strconv.Itoa(port))
		if mode == connectService {
			return &endpoint{host: host, port: port, how: "Service " + svc.Name + " (" + addr + ")", close: func() {}}, nil
		}
		dialer := net.Dialer{Timeout: serviceProbeTimeout}
		if conn, err := dialer.DialContext(ctx, "tcp", addr); err == nil {
			conn.Close()
			return &endpoint{host: host, port: port, how: "Service " + svc.Name + " (" + addr + ")", close: func() {}}, nil
		}
	}
	pod, err := c.primaryPod(ctx, pg)
	if err != nil {
		return nil, err
	}
	return c.portForward(ctx, pod, errOut)
}

// primaryPod is the Ready pod labelled primary.
func (c *Clients) primaryPod(ctx context.Context, pg *kubedbv1.Postgres) (*corev1.Pod, error) {
	pods, err := c.databasePods(ctx, pg)
	if err != nil {
		return nil, err
	}
	for i := range pods {
		if pods[i].Labels[kubedbv1.LabelRole] == kubedbv1.RolePrimary && podReady(&pods[i]) {
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

func podReady(pod *corev1.Pod) bool {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// portForward forwards a free local port to the pod's PostgreSQL port, over WebSockets where
// the API server speaks them, else SPDY, as kubectl port-forward does.
func (c *Clients) portForward(ctx context.Context, pod *corev1.Pod, errOut io.Writer) (*endpoint, error) {
	remote := kubedbv1.PostgresPort
	for _, ctr := range pod.Spec.Containers {
		for _, p := range ctr.Ports {
			if p.Name == "db" {
				remote = int(p.ContainerPort)
			}
		}
	}
	url := c.Kube.CoreV1().RESTClient().Post().Resource("pods").Namespace(pod.Namespace).Name(pod.Name).SubResource("portforward").URL()
	transport, upgrader, err := spdy.RoundTripperFor(c.Config)
	if err != nil {
		return nil, err
	}
	var dialer httpstream.Dialer = spdy.NewDialer(upgrader, &http.Client{Transport: transport}, http.MethodPost, url)
	if ws, err := portforward.NewSPDYOverWebsocketDialer(url, c.Config); err == nil {
		dialer = portforward.NewFallbackDialer(ws, dialer, func(err error) bool {
			return httpstream.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)
		})
	}
	fwCtx, cancel := context.WithCancel(ctx)
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
	}
	ports, err := fw.GetPorts()
	if err != nil || len(ports) == 0 {
		cancel()
		return nil, fmt.Errorf("port-forward to pod %s: no local port: %v", pod.Name, err)
	}
	return &endpoint{host: "127.0.0.1", port: int(ports[0].Local), how: "port-forward to pod " + pod.Name, close: cancel}, nil
}

// superuser is the credential in pg's auth Secret, the one PostgreSQL accepts.
func (c *Clients) superuser(ctx context.Context, pg *kubedbv1.Postgres) (secretName, user, password string, err error) {
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
