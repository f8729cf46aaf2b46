package nodeagent

import (
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
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

	m = newIPAM(netip.MustParsePrefix("198.18.0.0/20"), netip.MustParseAddr("198.18.0.1"))
	first, err := m.allocate("first", "198.18.0.1")
	require.NoError(t, err)
	assert.Equal(t, "198.18.0.2", first.String(), "the gateway's address is never a pod's")
}

func TestContainerScriptQuotes(t *testing.T) {
	a := &Agent{uid: 101, gid: 104, rootDir: "/tmp/agent", tools: tools{mount: "/usr/bin/mount", setpriv: "/usr/bin/setpriv", hostname: "/usr/bin/hostname"}}
	spec := procSpec{
		hostname: "pod-0",
		workDir:  "/work dir",
		mounts: []mount{
			{src: "/root/it's", dst: "/var/pv"},
			{src: "/tmp/agent/pods/u/volumes/empty-dir/tmp", dst: "/tmp"},
			{src: "/tmp/agent/pods/u/volumes/files/cm/1", dst: "/scripts", readOnly: true},
			{src: "/root/cm/file", dst: "/etc/x.conf", file: true},
		},
		id: identity{uid: 101, gid: 104, agentUser: true},
	}
	s := a.containerScript(spec)
	for _, want := range []string{
		`'/usr/bin/hostname' 'pod-0'`,
		`cd '/tmp/agent'`,
		`'/usr/bin/mount' --bind '/root/it'\''s' '/var/pv'`,
		// Named from the agent's root: the emptyDir at /tmp hides /tmp/agent once mounted.
		`'/usr/bin/mount' --bind './pods/u/volumes/empty-dir/tmp' '/tmp'`,
		`'/usr/bin/mount' --bind './pods/u/volumes/files/cm/1' '/scripts'`,
		`'/usr/bin/mount' -o remount,bind,ro '/scripts'`,
		`[ -e '/etc/x.conf' ] || : >'/etc/x.conf'`,
		`cd '/work dir'`,
		`exec '/usr/bin/setpriv' --reuid=101 --regid=104 --init-groups --pdeathsig=SIGKILL -- "$@"`,
	} {
		assert.Contains(t, s, want)
	}
	assert.NotContains(t, s, "remount,bind,ro /\n", "the root stays writable unless readOnlyRootFilesystem")

	// The pod's securityContext: its user and groups, a read-only root.
	spec.id = identity{uid: 999, gid: 999, groups: []int{999, 5}, readOnlyRoot: true}
	s = a.containerScript(spec)
	assert.Contains(t, s, `exec '/usr/bin/setpriv' --reuid=999 --regid=999 --groups=999,5 --pdeathsig=SIGKILL -- "$@"`)
	assert.Contains(t, s, "'/usr/bin/mount' -o remount,bind,ro /\n")
	spec.id = identity{uid: 999, gid: 999}
	assert.Contains(t, a.containerScript(spec), `--reuid=999 --regid=999 --clear-groups`)
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

func TestContainerIdentityFollowsTheSecurityContext(t *testing.T) {
	a := &Agent{uid: 101, gid: 104}
	pod := &corev1.Pod{Spec: corev1.PodSpec{}}
	c := &corev1.Container{Name: "c"}
	assert.Equal(t, identity{uid: 101, gid: 104, agentUser: true}, a.containerIdentity(pod, c), "no securityContext: the agent's user stands in for the image's USER")
	assert.Equal(t, owner{uid: 101, gid: 104}, a.volumeOwner(pod))

	pod.Spec.SecurityContext = &corev1.PodSecurityContext{
		RunAsUser: ptr.To[int64](999), RunAsGroup: ptr.To[int64](998), FSGroup: ptr.To[int64](997), SupplementalGroups: []int64{5, 997},
	}
	assert.Equal(t, identity{uid: 999, gid: 998, groups: []int{997, 5}}, a.containerIdentity(pod, c))
	assert.Equal(t, owner{uid: 999, gid: 997, fsGroup: true}, a.volumeOwner(pod), "volumes belong to the fsGroup")

	c.SecurityContext = &corev1.SecurityContext{RunAsUser: ptr.To[int64](70), ReadOnlyRootFilesystem: ptr.To(true)}
	assert.Equal(t, identity{uid: 70, gid: 998, groups: []int{997, 5}, readOnlyRoot: true}, a.containerIdentity(pod, c), "the container's securityContext wins")
}

func TestAccountFilesStandInForTheImage(t *testing.T) {
	a := &Agent{}
	dir := t.TempDir()
	mounts, err := a.accountFiles(identity{uid: 54321, gid: 54321}, "docker.io/library/postgres:16.4", dir)
	require.NoError(t, err)
	require.Len(t, mounts, 2)
	passwd, err := os.ReadFile(mounts[1].src)
	require.NoError(t, err)
	assert.Equal(t, "/etc/passwd", mounts[1].dst)
	assert.True(t, strings.HasPrefix(string(passwd), "postgres:x:54321:54321:"), "the official image's account comes first: %q", strings.SplitN(string(passwd), "\n", 2)[0])
	named := 0
	for _, line := range strings.Split(string(passwd), "\n") {
		if strings.HasPrefix(line, "postgres:") {
			named++
		}
	}
	assert.Equal(t, 1, named, "the machine's own postgres account is left out")
	assert.True(t, mounts[0].readOnly && mounts[1].readOnly)

	mounts, err = a.accountFiles(identity{uid: 0, gid: 0}, "postgres", dir)
	require.NoError(t, err)
	assert.Empty(t, mounts, "the machine's files already name uid 0")
	mounts, err = a.accountFiles(identity{uid: 54321, agentUser: true}, "postgres", dir)
	require.NoError(t, err)
	assert.Empty(t, mounts, "the agent's own user needs nothing")
}
