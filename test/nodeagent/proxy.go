package nodeagent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/informers"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/pgops/pgops/pkg/podstatus"
)

// serviceProxy is the kube-proxy part of the agent: for every Service with a
// ClusterIP it listens on ClusterIP:port (TCP) and forwards each connection to a ready
// endpoint, chosen per connection.
//
// Endpoints are the Ready pods the Service's selector matches, with the target port
// resolved like the endpoints controllers do (a number, or a container port name).
// The proxy reads pods itself rather than EndpointSlices: the local control plane runs
// without the endpoint controllers, because clusters with kwok's fake nodes have
// loopback pod IPs, which the API server refuses in EndpointSlices. ClusterIPs are
// local addresses of the host (Network routes the Service range to it), so the proxy
// can listen on them and pods reach them through their default route.
type serviceProxy struct {
	a       *Agent
	factory informers.SharedInformerFactory
	pods    corelisters.PodLister
	svcInf  cache.SharedIndexInformer
	podsOK  cache.InformerSynced

	mu        sync.Mutex
	listeners map[string]*listener // "ip:port"
	failed    map[string]string    // listen errors already logged
	stopped   bool
	kick      chan struct{}
	done      chan struct{}
}

// listener serves one ClusterIP:port of a Service.
type listener struct {
	ln        net.Listener
	namespace string
	service   string
	portName  string
	uid       string

	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

func newServiceProxy(a *Agent) *serviceProxy {
	return &serviceProxy{
		a:         a,
		listeners: map[string]*listener{},
		failed:    map[string]string{},
		kick:      make(chan struct{}, 1),
		done:      make(chan struct{}),
	}
}

func (sp *serviceProxy) start() error {
	sp.factory = informers.NewSharedInformerFactory(sp.a.client, 0)
	sp.svcInf = sp.factory.Core().V1().Services().Informer()
	podInf := sp.factory.Core().V1().Pods()
	sp.pods = podInf.Lister()
	sp.podsOK = podInf.Informer().HasSynced
	kick := func(any) {
		select {
		case sp.kick <- struct{}{}:
		default:
		}
	}
	if _, err := sp.svcInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: kick, UpdateFunc: func(_, o any) { kick(o) }, DeleteFunc: kick,
	}); err != nil {
		return err
	}
	sp.factory.Start(sp.a.ctx.Done())
	go sp.loop()
	return nil
}

func (sp *serviceProxy) waitSynced(ctx context.Context) error {
	if !cache.WaitForCacheSync(ctx.Done(), sp.svcInf.HasSynced, sp.podsOK) {
		return fmt.Errorf("nodeagent: service proxy informers did not sync: %w", ctx.Err())
	}
	sp.sync()
	return nil
}

// loop reconciles listeners on every Service change, and every few seconds to retry
// addresses that could not be bound.
func (sp *serviceProxy) loop() {
	defer close(sp.done)
	tick := time.NewTicker(3 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-sp.a.ctx.Done():
			return
		case <-sp.kick:
		case <-tick.C:
		}
		sp.sync()
	}
}

// sync opens a listener for every ClusterIP:port that lacks one and closes those of
// Services (or ports) that went away.
func (sp *serviceProxy) sync() {
	want := map[string]*listener{}
	for _, obj := range sp.svcInf.GetStore().List() {
		svc, ok := obj.(*corev1.Service)
		if !ok || svc.Spec.Type == corev1.ServiceTypeExternalName {
			continue
		}
		for _, ip := range svc.Spec.ClusterIPs {
			if ip == "" || ip == corev1.ClusterIPNone {
				continue
			}
			for _, p := range svc.Spec.Ports {
				if p.Protocol != "" && p.Protocol != corev1.ProtocolTCP {
					continue
				}
				addr := net.JoinHostPort(ip, strconv.Itoa(int(p.Port)))
				want[addr] = &listener{namespace: svc.Namespace, service: svc.Name, portName: p.Name, uid: string(svc.UID)}
			}
		}
	}

	sp.mu.Lock()
	defer sp.mu.Unlock()
	if sp.stopped {
		return
	}
	for addr, l := range sp.listeners {
		if w, ok := want[addr]; !ok || w.uid != l.uid || w.portName != l.portName {
			l.close()
			delete(sp.listeners, addr)
			sp.a.logf("proxy: closed %s (service %s/%s)", addr, l.namespace, l.service)
		}
	}
	for addr := range sp.failed {
		if _, ok := want[addr]; !ok {
			delete(sp.failed, addr)
		}
	}
	for addr, l := range want {
		if _, ok := sp.listeners[addr]; ok {
			continue
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			if sp.failed[addr] != err.Error() {
				sp.a.logf("proxy: cannot listen on %s for service %s/%s: %v", addr, l.namespace, l.service, err)
				sp.failed[addr] = err.Error()
			}
			continue
		}
		delete(sp.failed, addr)
		l.ln, l.conns = ln, map[net.Conn]struct{}{}
		sp.listeners[addr] = l
		sp.a.logf("proxy: listening on %s for service %s/%s", addr, l.namespace, l.service)
		go sp.serve(l)
	}
}

func (l *listener) close() {
	l.ln.Close()
	l.mu.Lock()
	defer l.mu.Unlock()
	for c := range l.conns {
		c.Close()
	}
}

func (l *listener) track(c net.Conn, add bool) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if add {
		if l.conns == nil {
			return false
		}
		l.conns[c] = struct{}{}
	} else {
		delete(l.conns, c)
	}
	return true
}

func (sp *serviceProxy) serve(l *listener) {
	for {
		c, err := l.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(50 * time.Millisecond)
			continue
		}
		go sp.forward(l, c)
	}
}

// endpoints returns the ready endpoint addresses (ip:port) of a Service port, in
// random order.
func (sp *serviceProxy) endpoints(l *listener) []string {
	obj, ok, err := sp.svcInf.GetStore().GetByKey(l.namespace + "/" + l.service)
	if err != nil || !ok {
		return nil
	}
	svc := obj.(*corev1.Service)
	if len(svc.Spec.Selector) == 0 {
		return nil
	}
	var sport *corev1.ServicePort
	for i := range svc.Spec.Ports {
		if svc.Spec.Ports[i].Name == l.portName {
			sport = &svc.Spec.Ports[i]
		}
	}
	if sport == nil {
		return nil
	}
	pods, err := sp.pods.Pods(l.namespace).List(labels.SelectorFromSet(svc.Spec.Selector))
	if err != nil {
		return nil
	}
	var out []string
	for _, pod := range pods {
		if pod.Status.PodIP == "" || pod.DeletionTimestamp != nil || !podstatus.Ready(pod) {
			continue
		}
		port := targetPort(pod, sport)
		if port <= 0 {
			continue
		}
		out = append(out, net.JoinHostPort(pod.Status.PodIP, strconv.Itoa(port)))
	}
	rand.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

// targetPort resolves a Service port's targetPort for one pod: a number, a name of one
// of the pod's container ports, or (unset) the Service port itself.
func targetPort(pod *corev1.Pod, sp *corev1.ServicePort) int {
	tp := sp.TargetPort
	switch {
	case tp.Type == intstr.Int && tp.IntVal == 0:
		return int(sp.Port)
	case tp.Type == intstr.Int:
		return int(tp.IntVal)
	}
	for _, c := range pod.Spec.Containers {
		for _, p := range c.Ports {
			if p.Name == tp.StrVal && (p.Protocol == "" || p.Protocol == corev1.ProtocolTCP) {
				return int(p.ContainerPort)
			}
		}
	}
	return 0
}

// forward connects client to the first endpoint that answers and copies both ways.
func (sp *serviceProxy) forward(l *listener, client net.Conn) {
	defer client.Close()
	if !l.track(client, true) {
		return
	}
	defer l.track(client, false)
	var backend net.Conn
	for _, ep := range sp.endpoints(l) {
		c, err := net.DialTimeout("tcp", ep, 2*time.Second)
		if err == nil {
			backend = c
			break
		}
	}
	if backend == nil {
		return
	}
	defer backend.Close()
	l.track(backend, true)
	defer l.track(backend, false)
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		done <- struct{}{}
	}
	go pipe(backend, client)
	go pipe(client, backend)
	<-done
	<-done
}

// stop closes every listener and proxied connection.
func (sp *serviceProxy) stop() {
	sp.mu.Lock()
	sp.stopped = true
	for addr, l := range sp.listeners {
		l.close()
		delete(sp.listeners, addr)
	}
	sp.mu.Unlock()
}

// shutdown waits for the informers and the loop; the agent's context must be done.
func (sp *serviceProxy) shutdown() {
	sp.factory.Shutdown()
	<-sp.done
}
