package nodeagent

import (
	"context"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// envVar is one resolved variable. Values may hold credentials: never log them.
type envVar struct{ name, value string }

// envList keeps variables in the order they were defined, later definitions
// replacing earlier ones in place (as the kubelet's map-then-list does, minus the
// randomness of map order).
type envList struct {
	order []string
	vals  map[string]string
}

func newEnvList() *envList { return &envList{vals: map[string]string{}} }

func (l *envList) set(name, value string) {
	if _, ok := l.vals[name]; !ok {
		l.order = append(l.order, name)
	}
	l.vals[name] = value
}

func (l *envList) get(name string) (string, bool) {
	v, ok := l.vals[name]
	return v, ok
}

// environ returns NAME=value pairs for exec.Cmd.Env.
func (l *envList) environ() []string {
	out := make([]string, 0, len(l.order))
	for _, n := range l.order {
		out = append(out, n+"="+l.vals[n])
	}
	return out
}

// expand replaces $(VAR) references in s like the kubelet (and the apiserver's
// documentation of env, command and args) does: $(VAR) becomes the value of VAR if
// defined, and stays as written if not; $$ is an escaped $, so $$(VAR) yields the
// literal $(VAR); a $ before any other character, and an unterminated $(, are kept.
func expand(s string, lookup func(string) (string, bool)) string {
	if !strings.Contains(s, "$") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '$' || i+1 >= len(s) {
			b.WriteByte(c)
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				// Unterminated: the rest is literal.
				b.WriteString(s[i:])
				return b.String()
			}
			name := s[i+2 : i+2+end]
			if v, ok := lookup(name); ok && name != "" {
				b.WriteString(v)
			} else {
				b.WriteString(s[i : i+3+end])
			}
			i += 2 + end
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// serviceEnvName turns a Service or port name into its environment form: upper
// case, dashes and dots as underscores.
func serviceEnvName(name string) string {
	return strings.NewReplacer("-", "_", ".", "_").Replace(strings.ToUpper(name))
}

// serviceEnv adds the variables the kubelet derives from Services: for every Service
// with a ClusterIP, <NAME>_SERVICE_HOST, <NAME>_SERVICE_PORT (first port),
// <NAME>_SERVICE_PORT_<PORTNAME> (named ports), and the Docker-link style
// <NAME>_PORT, <NAME>_PORT_<port>_<PROTO>{,_PROTO,_PORT,_ADDR}. Services are added in
// name order so the result is stable.
func serviceEnv(env *envList, services []corev1.Service) {
	sort.Slice(services, func(i, j int) bool { return services[i].Name < services[j].Name })
	for _, svc := range services {
		ip := svc.Spec.ClusterIP
		if ip == "" || ip == corev1.ClusterIPNone || svc.Spec.Type == corev1.ServiceTypeExternalName {
			continue
		}
		name := serviceEnvName(svc.Name)
		env.set(name+"_SERVICE_HOST", ip)
		if len(svc.Spec.Ports) == 0 {
			continue
		}
		env.set(name+"_SERVICE_PORT", strconv.Itoa(int(svc.Spec.Ports[0].Port)))
		for _, p := range svc.Spec.Ports {
			if p.Name != "" {
				env.set(name+"_SERVICE_PORT_"+serviceEnvName(p.Name), strconv.Itoa(int(p.Port)))
			}
		}
		first := svc.Spec.Ports[0]
		env.set(name+"_PORT", fmt.Sprintf("%s://%s:%d", strings.ToLower(string(protocolOf(first))), ip, first.Port))
		for _, p := range svc.Spec.Ports {
			proto := protocolOf(p)
			prefix := fmt.Sprintf("%s_PORT_%d_%s", name, p.Port, strings.ToUpper(string(proto)))
			env.set(prefix, fmt.Sprintf("%s://%s:%d", strings.ToLower(string(proto)), ip, p.Port))
			env.set(prefix+"_PROTO", strings.ToLower(string(proto)))
			env.set(prefix+"_PORT", strconv.Itoa(int(p.Port)))
			env.set(prefix+"_ADDR", ip)
		}
	}
}

func protocolOf(p corev1.ServicePort) corev1.Protocol {
	if p.Protocol == "" {
		return corev1.ProtocolTCP
	}
	return p.Protocol
}

// envContext is what resolving a container's environment needs to know.
type envContext struct {
	pod       *corev1.Pod
	podIP     string
	hostIP    string
	container *corev1.Container
	// allocatable is the node's, the default for resourceFieldRef limits.
	allocatable corev1.ResourceList
}

// resolveEnv computes a container's environment like the kubelet: first the service
// variables (all Services of the pod's namespace with enableServiceLinks, which
// defaults to true; always the "kubernetes" Service of namespace default), then
// envFrom, then env in order, each value with $(VAR) references to the variables
// defined so far expanded. It reads Secrets, ConfigMaps and Services from the API
// with direct GETs and LISTs, never from a cache, so an object created just before
// the pod is seen.
func (a *Agent) resolveEnv(ctx context.Context, ec envContext) (*envList, error) {
	pod, ctr := ec.pod, ec.container
	env := newEnvList()

	var services []corev1.Service
	if pod.Spec.EnableServiceLinks == nil || *pod.Spec.EnableServiceLinks {
		list, err := a.client.CoreV1().Services(pod.Namespace).List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, fmt.Errorf("list services of namespace %s: %w", pod.Namespace, err)
		}
		services = list.Items
	}
	hasMaster := false
	for _, s := range services {
		hasMaster = hasMaster || s.Name == "kubernetes"
	}
	if !hasMaster {
		// The master Service is always there, even without service links; a Service
		// of the same name in the pod's namespace takes precedence.
		master, err := a.client.CoreV1().Services(metav1.NamespaceDefault).Get(ctx, "kubernetes", metav1.GetOptions{})
		if err == nil {
			services = append(services, *master)
		} else if !apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("get service default/kubernetes: %w", err)
		}
	}
	serviceEnv(env, services)

	cms := map[string]*corev1.ConfigMap{}
	secrets := map[string]*corev1.Secret{}
	getCM := func(name string) (*corev1.ConfigMap, error) {
		if cm, ok := cms[name]; ok {
			return cm, nil
		}
		cm, err := a.client.CoreV1().ConfigMaps(pod.Namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return nil, err
		}
		cms[name] = cm
		return cm, nil
	}
	getSecret := func(name string) (*corev1.Secret, error) {
		if s, ok := secrets[name]; ok {
			return s, nil
		}
		s, err := a.client.CoreV1().Secrets(pod.Namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return nil, err
		}
		secrets[name] = s
		return s, nil
	}

	for _, from := range ctr.EnvFrom {
		switch {
		case from.ConfigMapRef != nil:
			cm, err := getCM(from.ConfigMapRef.Name)
			if err != nil {
				if apierrors.IsNotFound(err) && optional(from.ConfigMapRef.Optional) {
					continue
				}
				return nil, fmt.Errorf("envFrom configmap %s: %w", from.ConfigMapRef.Name, err)
			}
			for _, k := range sortedKeys(cm.Data) {
				env.set(from.Prefix+k, cm.Data[k])
			}
		case from.SecretRef != nil:
			s, err := getSecret(from.SecretRef.Name)
			if err != nil {
				if apierrors.IsNotFound(err) && optional(from.SecretRef.Optional) {
					continue
				}
				return nil, fmt.Errorf("envFrom secret %s: %w", from.SecretRef.Name, err)
			}
			for _, k := range sortedKeys(s.Data) {
				env.set(from.Prefix+k, string(s.Data[k]))
			}
		}
	}

	for _, e := range ctr.Env {
		if e.ValueFrom == nil {
			env.set(e.Name, expand(e.Value, env.get))
			continue
		}
		vf := e.ValueFrom
		switch {
		case vf.FieldRef != nil:
			v, err := fieldValue(vf.FieldRef.FieldPath, pod, ec.podIP, ec.hostIP)
			if err != nil {
				return nil, fmt.Errorf("env %s: %w", e.Name, err)
			}
			env.set(e.Name, v)
		case vf.ResourceFieldRef != nil:
			v, err := resourceValue(vf.ResourceFieldRef, pod, ctr, ec.allocatable)
			if err != nil {
				return nil, fmt.Errorf("env %s: %w", e.Name, err)
			}
			env.set(e.Name, v)
		case vf.ConfigMapKeyRef != nil:
			ref := vf.ConfigMapKeyRef
			cm, err := getCM(ref.Name)
			if err != nil {
				if apierrors.IsNotFound(err) && optional(ref.Optional) {
					continue
				}
				return nil, fmt.Errorf("env %s: configmap %s: %w", e.Name, ref.Name, err)
			}
			v, ok := cm.Data[ref.Key]
			if !ok {
				if b, bok := cm.BinaryData[ref.Key]; bok {
					v, ok = string(b), true
				}
			}
			if !ok {
				if optional(ref.Optional) {
					continue
				}
				return nil, fmt.Errorf("env %s: configmap %s has no key %q", e.Name, ref.Name, ref.Key)
			}
			env.set(e.Name, v)
		case vf.SecretKeyRef != nil:
			ref := vf.SecretKeyRef
			s, err := getSecret(ref.Name)
			if err != nil {
				if apierrors.IsNotFound(err) && optional(ref.Optional) {
					continue
				}
				return nil, fmt.Errorf("env %s: secret %s: %w", e.Name, ref.Name, err)
			}
			b, ok := s.Data[ref.Key]
			if !ok {
				if optional(ref.Optional) {
					continue
				}
				return nil, fmt.Errorf("env %s: secret %s has no key %q", e.Name, ref.Name, ref.Key)
			}
			env.set(e.Name, string(b))
		default:
			return nil, fmt.Errorf("env %s: unsupported valueFrom", e.Name)
		}
	}
	return env, nil
}

func optional(p *bool) bool { return p != nil && *p }

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// fieldValue resolves a downward-API field path of the pod.
func fieldValue(path string, pod *corev1.Pod, podIP, hostIP string) (string, error) {
	if strings.HasPrefix(path, "metadata.labels['") && strings.HasSuffix(path, "']") {
		return pod.Labels[path[len("metadata.labels['"):len(path)-2]], nil
	}
	if strings.HasPrefix(path, "metadata.annotations['") && strings.HasSuffix(path, "']") {
		return pod.Annotations[path[len("metadata.annotations['"):len(path)-2]], nil
	}
	switch path {
	case "metadata.name":
		return pod.Name, nil
	case "metadata.namespace":
		return pod.Namespace, nil
	case "metadata.uid":
		return string(pod.UID), nil
	case "metadata.labels":
		return formatMap(pod.Labels), nil
	case "metadata.annotations":
		return formatMap(pod.Annotations), nil
	case "spec.nodeName":
		return pod.Spec.NodeName, nil
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName, nil
	case "status.podIP", "status.podIPs":
		return podIP, nil
	case "status.hostIP", "status.hostIPs":
		return hostIP, nil
	}
	return "", fmt.Errorf("unsupported fieldRef %q", path)
}

// formatMap renders labels or annotations as the downward API does: key="value" lines
// in key order.
func formatMap(m map[string]string) string {
	var b strings.Builder
	for i, k := range sortedKeys(m) {
		if i > 0 {
			b.WriteByte('\n')
		}
		fmt.Fprintf(&b, "%s=%q", k, m[k])
	}
	return b.String()
}

// resourceValue resolves a resourceFieldRef: the container's limit (or request), a
// missing limit defaulting to the node's allocatable, divided by the divisor and
// rounded up, as the kubelet does.
func resourceValue(ref *corev1.ResourceFieldSelector, pod *corev1.Pod, ctr *corev1.Container, allocatable corev1.ResourceList) (string, error) {
	c := ctr
	if ref.ContainerName != "" && ref.ContainerName != ctr.Name {
		c = nil
		for i := range pod.Spec.Containers {
			if pod.Spec.Containers[i].Name == ref.ContainerName {
				c = &pod.Spec.Containers[i]
			}
		}
		if c == nil {
			return "", fmt.Errorf("resourceFieldRef: no container %q", ref.ContainerName)
		}
	}
	kind, name, ok := strings.Cut(ref.Resource, ".")
	if !ok {
		return "", fmt.Errorf("unsupported resourceFieldRef %q", ref.Resource)
	}
	list := c.Resources.Limits
	if kind == "requests" {
		list = c.Resources.Requests
	}
	q, ok := list[corev1.ResourceName(name)]
	if !ok {
		if kind == "requests" && name != "cpu" {
			return "0", nil
		}
		q, ok = allocatable[corev1.ResourceName(name)]
		if !ok {
			return "0", nil
		}
	}
	divisor := ref.Divisor
	if divisor.IsZero() {
		divisor = resource.MustParse("1")
	}
	v := math.Ceil(float64(q.MilliValue()) / float64(divisor.MilliValue()))
	return strconv.FormatInt(int64(v), 10), nil
}
