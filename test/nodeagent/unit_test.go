package nodeagent

import (
	"net/netip"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

func TestExpand(t *testing.T) {
	vars := map[string]string{"A": "1", "B": "two", "EMPTY": ""}
	lookup := func(n string) (string, bool) { v, ok := vars[n]; return v, ok }
	for in, want := range map[string]string{
		"plain":          "plain",
		"$(A)":           "1",
		"x$(A)y$(B)z":    "x1ytwoz",
		"$(MISSING)":     "$(MISSING)",
		"$$(A)":          "$(A)",
		"$$":             "$",
		"$A":             "$A",
		"$(A":            "$(A",
		"$(EMPTY)-":      "-",
		"$()":            "$()",
		"trailing$":      "trailing$",
		"$$$(A)":         "$1",
		"$(A)$(B)$(A)":   "1two1",
		"cost: $5 $(B)!": "cost: $5 two!",
	} {
		assert.Equal(t, want, expand(in, lookup), "expand(%q)", in)
	}
}

func TestServiceEnv(t *testing.T) {
	env := newEnvList()
	serviceEnv(env, []corev1.Service{
		{ObjectMeta: metav1.ObjectMeta{Name: "my-db"}, Spec: corev1.ServiceSpec{
			ClusterIP: "127.1.2.3",
			Ports:     []corev1.ServicePort{{Name: "primary", Port: 5432}, {Name: "metrics-port", Port: 9187, Protocol: corev1.ProtocolTCP}},
		}},
		{ObjectMeta: metav1.ObjectMeta{Name: "headless"}, Spec: corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone}},
		{ObjectMeta: metav1.ObjectMeta{Name: "ext"}, Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "x"}},
	})
	want := map[string]string{
		"MY_DB_SERVICE_HOST":              "127.1.2.3",
		"MY_DB_SERVICE_PORT":              "5432",
		"MY_DB_SERVICE_PORT_PRIMARY":      "5432",
		"MY_DB_SERVICE_PORT_METRICS_PORT": "9187",
		"MY_DB_PORT":                      "tcp://127.1.2.3:5432",
		"MY_DB_PORT_5432_TCP":             "tcp://127.1.2.3:5432",
		"MY_DB_PORT_5432_TCP_PROTO":       "tcp",
		"MY_DB_PORT_5432_TCP_PORT":        "5432",
		"MY_DB_PORT_5432_TCP_ADDR":        "127.1.2.3",
		"MY_DB_PORT_9187_TCP":             "tcp://127.1.2.3:9187",
		"MY_DB_PORT_9187_TCP_PROTO":       "tcp",
		"MY_DB_PORT_9187_TCP_PORT":        "9187",
		"MY_DB_PORT_9187_TCP_ADDR":        "127.1.2.3",
	}
	assert.Equal(t, want, env.vals)
}

func TestFieldValue(t *testing.T) {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", UID: "u-1",
			Labels: map[string]string{"app": "x", "b": "y"}, Annotations: map[string]string{"note": "n"}},
		Spec: corev1.PodSpec{NodeName: "node", ServiceAccountName: "sa"},
	}
	for path, want := range map[string]string{
		"metadata.name": "p", "metadata.namespace": "ns", "metadata.uid": "u-1",
		"metadata.labels['app']": "x", "metadata.annotations['note']": "n", "metadata.labels": "app=\"x\"\nb=\"y\"",
		"spec.nodeName": "node", "spec.serviceAccountName": "sa", "status.podIP": "127.9.0.1", "status.hostIP": "127.0.0.1",
	} {
		got, err := fieldValue(path, pod, "127.9.0.1", "127.0.0.1")
		require.NoError(t, err, path)
		assert.Equal(t, want, got, path)
	}
	_, err := fieldValue("spec.bogus", pod, "", "")
	assert.Error(t, err)
}

func TestIPAM(t *testing.T) {
	m := newIPAM(netip.MustParsePrefix("127.50.0.0/30"))
	a, err := m.allocate("a", "")
	require.NoError(t, err)
	assert.Equal(t, "127.50.0.1", a.String())
	again, err := m.allocate("a", "")
	require.NoError(t, err)
	assert.Equal(t, a, again, "one address per pod")
	b, err := m.allocate("b", "")
	require.NoError(t, err)
	assert.Equal(t, "127.50.0.2", b.String())
	_, err = m.allocate("c", "")
	assert.Error(t, err, "a /30 has two usable addresses")
	m.release(a)
	c, err := m.allocate(types.UID("c"), "")
	require.NoError(t, err)
	assert.Equal(t, a, c)

	m = newIPAM(netip.MustParsePrefix("127.51.0.0/16"))
	kept, err := m.allocate("old", "127.51.3.4")
	require.NoError(t, err)
	assert.Equal(t, "127.51.3.4", kept.String(), "a pod taken over keeps its IP")
	outside, err := m.allocate("other", "10.0.0.1")
	require.NoError(t, err)
	assert.Equal(t, "127.51.0.1", outside.String())
}

func TestContainerScriptQuotes(t *testing.T) {
	a := &Agent{uid: 101, gid: 104, tools: tools{mount: "/usr/bin/mount", setpriv: "/usr/bin/setpriv", hostname: "/usr/bin/hostname"}}
	s := a.containerScript(procSpec{
		hostname: "pod-0",
		workDir:  "/work dir",
		mounts: []mount{
			{src: "/root/it's", dst: "/var/pv"},
			{src: "/root/cm", dst: "/scripts", readOnly: true},
			{src: "/root/cm/file", dst: "/etc/x.conf", file: true},
		},
	})
	for _, want := range []string{
		`'/usr/bin/hostname' 'pod-0'`,
		`'/usr/bin/mount' --bind '/root/it'\''s' '/var/pv'`,
		`'/usr/bin/mount' -o remount,bind,ro '/scripts'`,
		`[ -e '/etc/x.conf' ] || : >'/etc/x.conf'`,
		`cd '/work dir'`,
		`exec '/usr/bin/setpriv' --reuid=101 --regid=104 --init-groups --pdeathsig=SIGKILL -- "$@"`,
	} {
		assert.Contains(t, s, want)
	}
}

func TestStopSignal(t *testing.T) {
	for image, want := range map[string]syscall.Signal{
		"postgres":                            syscall.SIGINT,
		"postgres:15.4":                       syscall.SIGINT,
		"docker.io/library/postgres:16.4":     syscall.SIGINT,
		"localhost:5000/postgres":             syscall.SIGINT,
		"postgres@sha256:abc":                 syscall.SIGINT,
		"bitnami/postgresql:16":               syscall.SIGTERM,
		"busybox":                             syscall.SIGTERM,
		"localhost:5000/tools/postgres-ctl:1": syscall.SIGTERM,
		"":                                    syscall.SIGTERM,
	} {
		assert.Equal(t, want, stopSignal(&corev1.Container{Image: image}), image)
	}
	sig := corev1.SIGUSR1
	assert.Equal(t, syscall.SIGUSR1, stopSignal(&corev1.Container{Image: "postgres", Lifecycle: &corev1.Lifecycle{StopSignal: &sig}}))
}
