package plugin

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	k8sfake "k8s.io/client-go/kubernetes/fake"
	clienttesting "k8s.io/client-go/testing"
	"k8s.io/utils/ptr"

	kubedbv1 "github.com/pgops/pgops/pkg/apis/kubedb/v1"
	opsv1alpha1 "github.com/pgops/pgops/pkg/apis/ops/v1alpha1"
	"github.com/pgops/pgops/pkg/credential"
	"github.com/pgops/pgops/pkg/generated/clientset/versioned/fake"
)

const ns = "demo"

type harness struct {
	kube  *k8sfake.Clientset
	pgops *fake.Clientset
	out   bytes.Buffer
	lags  []credential.StandbyLag
	// target is what the status command logged in with.
	target credential.Target
}

func newHarness(t *testing.T, pgopsObjs []runtime.Object, kubeObjs ...runtime.Object) *harness {
	t.Helper()
	return &harness{kube: k8sfake.NewClientset(kubeObjs...), pgops: fake.NewSimpleClientset(pgopsObjs...)}
}

func (h *harness) run(t *testing.T, args ...string) error {
	t.Helper()
	cmd := NewCommand(Env{
		Streams: Streams{In: strings.NewReader(""), Out: &h.out, ErrOut: &h.out},
		Clients: func() (*Clients, error) {
			return &Clients{Namespace: ns, Kube: h.kube, Pgops: h.pgops}, nil
		},
		ReplicationLag: func(_ context.Context, target credential.Target) ([]credential.StandbyLag, error) {
			h.target = target
			return h.lags, nil
		},
		IsTerminal: func(io.Writer) bool { return false },
	})
	cmd.SetArgs(args)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return cmd.ExecuteContext(ctx)
}

func postgres(name string) *kubedbv1.Postgres {
	return &kubedbv1.Postgres{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, CreationTimestamp: metav1.NewTime(time.Now().Add(-time.Hour))},
		Spec:       kubedbv1.PostgresSpec{Version: "16.4", Replicas: ptr.To[int32](2), StorageType: kubedbv1.StorageTypeDurable},
		Status:     kubedbv1.PostgresStatus{Phase: kubedbv1.DatabasePhaseReady},
	}
}

func (h *harness) createdRequests(t *testing.T) []opsv1alpha1.PostgresOpsRequest {
	t.Helper()
	list, err := h.pgops.OpsV1alpha1().PostgresOpsRequests(ns).List(context.Background(), metav1.ListOptions{})
	require.NoError(t, err)
	return list.Items
}

func TestRotateAuthRefusesBadFlagsBeforeCreatingAnything(t *testing.T) {
	for name, args := range map[string][]string{
		"unknown restart mode": {"rotate-auth", "db", "--restart", "Everything"},
		"negative timeout":     {"rotate-auth", "db", "--timeout", "-1m"},
		"padded secret name":   {"rotate-auth", "db", "--secret", " mine"},
		"no database":          {"rotate-auth"},
		"missing database":     {"rotate-auth", "nope"},
	} {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, []runtime.Object{postgres("db")})
			err := h.run(t, args...)
			require.Error(t, err)
			assert.Empty(t, h.createdRequests(t), "nothing is created")
		})
	}
	h := newHarness(t, nil)
	err := h.run(t, "rotate-auth", "nope")
	require.Error(t, err)
	assert.Contains(t, err.Error(), `postgres "nope" not found in namespace "demo": `+"`kubectl get pg -n demo`")
}

func TestRotateAuthCreatesTheRequestTheFlagsDescribe(t *testing.T) {
	h := newHarness(t, []runtime.Object{postgres("db")})
	require.NoError(t, h.run(t, "rotate-auth", "db", "--secret", "mine", "--restart", "StandbysOnly", "--timeout", "3m"))
	// The fake API server does not fill in generateName.
	reqs := h.createdRequests(t)
	require.Len(t, reqs, 1)
	r := reqs[0]
	assert.Equal(t, "db-rotate-auth-", r.GenerateName)
	assert.Equal(t, opsv1alpha1.OpsRequestTypeRotateAuth, r.Spec.Type)
	assert.Equal(t, "db", r.Spec.DatabaseRef.Name)
	assert.Equal(t, "mine", r.Spec.Authentication.SecretRef.Name)
	assert.Equal(t, opsv1alpha1.RestartStandbysOnly, r.Spec.RotateAuth.Restart)
	assert.Equal(t, 3*time.Minute, r.Spec.Timeout.Duration)
	assert.Contains(t, h.out.String(), "kubectl get pgops -n demo")
}

// playOpsManager moves the request created by the plugin through steps once the plugin
// watches it, as the ops-manager would, ending with phase.
func (h *harness) playOpsManager(t *testing.T, phase opsv1alpha1.OpsRequestPhase, reason string) {
	watching := make(chan struct{})
	// The watch is registered with the tracker here, before the steps start: a step
	// written before the watch exists would reach the plugin only as the latest state.
	var once sync.Once
	h.pgops.PrependWatchReactor("postgresopsrequests", func(a clienttesting.Action) (bool, watch.Interface, error) {
		var opts metav1.ListOptions
		if w, ok := a.(clienttesting.WatchActionImpl); ok {
			opts = w.ListOptions
		}
		w, err := h.pgops.Tracker().Watch(a.GetResource(), a.GetNamespace(), opts)
		once.Do(func() { close(watching) })
		return true, w, err
	})
	h.pgops.PrependReactor("create", "postgresopsrequests", func(a clienttesting.Action) (bool, runtime.Object, error) {
		obj := a.(clienttesting.CreateAction).GetObject().(*opsv1alpha1.PostgresOpsRequest)
		obj.Name = obj.GenerateName + "abcde"
		obj.CreationTimestamp = metav1.NewTime(time.Now())
		return false, nil, nil
	})
	go func() {
		<-watching
		ctx := context.Background()
		requests := h.pgops.OpsV1alpha1().PostgresOpsRequests(ns)
		req, err := requests.Get(ctx, "db-rotate-auth-abcde", metav1.GetOptions{})
		if err != nil {
			t.Error(err)
			return
		}
		at := req.CreationTimestamp.Time
		step := func(phase opsv1alpha1.OpsRequestPhase, typ string, status metav1.ConditionStatus, reason, msg string) {
			at = at.Add(time.Second)
			req.Status.Phase = phase
			setCond(&req.Status.Conditions, metav1.Condition{Type: typ, Status: status, Reason: reason, Message: msg, LastTransitionTime: metav1.NewTime(at)})
			if req, err = requests.UpdateStatus(ctx, req, metav1.UpdateOptions{}); err != nil {
				t.Error(err)
			}
		}
		step(opsv1alpha1.OpsRequestPhasePending, "Pending", metav1.ConditionTrue, "Admitted", "the request is queued")
		step(opsv1alpha1.OpsRequestPhaseProgressing, "Pending", metav1.ConditionFalse, "Started", "started")
		step(opsv1alpha1.OpsRequestPhaseProgressing, "RotateAuth", metav1.ConditionTrue, "Started", "rotating the credential")
		step(opsv1alpha1.OpsRequestPhaseProgressing, "PauseDatabase", metav1.ConditionFalse, "InProgress", "pausing the database")
		step(opsv1alpha1.OpsRequestPhaseProgressing, "PauseDatabase", metav1.ConditionTrue, "Completed", "paused")
		if phase == opsv1alpha1.OpsRequestPhaseFailed {
			step(phase, "Failed", metav1.ConditionTrue, reason, "the Secret mine has no password key\nadd one")
			return
		}
		step(opsv1alpha1.OpsRequestPhaseProgressing, "ResumeDatabase", metav1.ConditionTrue, "Completed", "resumed")
		step(phase, "Successful", metav1.ConditionTrue, "Completed", "the credential was rotated")
	}()
}

func setCond(conds *[]metav1.Condition, c metav1.Condition) {
	for i := range *conds {
		if (*conds)[i].Type == c.Type {
			(*conds)[i] = c
			return
		}
	}
	*conds = append(*conds, c)
}

func TestRotateAuthWaitPrintsEachStepAndExitsZeroOnSuccess(t *testing.T) {
	h := newHarness(t, []runtime.Object{postgres("db")})
	h.playOpsManager(t, opsv1alpha1.OpsRequestPhaseSuccessful, "")
	require.NoError(t, h.run(t, "rotate-auth", "db", "--wait"))
	out := h.out.String()
	for _, want := range []string{
		`postgresopsrequest/db-rotate-auth-abcde created\n`,
		`\n… Pending: the request is queued\n`,
		`\n▶ \+\d+\.\ds +RotateAuth: rotating the credential\n`,
		`\n… PauseDatabase: pausing the database\n`,
		`\n✓ \+\d+\.\ds +PauseDatabase: paused\n`,
		`\n✓ \+\d+\.\ds +ResumeDatabase: resumed\n`,
		`\n✓ db-rotate-auth-abcde Successful in \d+\.\ds: the credential was rotated\n$`,
	} {
		assert.Regexp(t, want, out)
	}
	assert.NotRegexp(t, `✓ .*Pending`, out, "waiting is not a completed step")
}

func TestRotateAuthWaitExitsOneWithTheReasonWhenTheRequestFails(t *testing.T) {
	h := newHarness(t, []runtime.Object{postgres("db")})
	h.playOpsManager(t, opsv1alpha1.OpsRequestPhaseFailed, "InvalidSecret")
	err := h.run(t, "rotate-auth", "db", "--secret", "mine", "--wait")
	var code ExitCode
	require.True(t, errors.As(err, &code), "%v", err)
	assert.Equal(t, ExitCode(1), code)
	out := h.out.String()
	assert.Regexp(t, `✗ db-rotate-auth-abcde Failed in \d+\.\ds: InvalidSecret: the Secret mine has no password key add one\n`, out)
	assert.Contains(t, out, "kubectl describe pgops -n demo db-rotate-auth-abcde")
}

func TestLiveProgressRedrawsOneLineAndKeepsCompletedSteps(t *testing.T) {
	var out bytes.Buffer
	created := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	p := newProgress(&out, true, func() time.Time { return created.Add(1500 * time.Millisecond) })
	req := &opsv1alpha1.PostgresOpsRequest{ObjectMeta: metav1.ObjectMeta{Name: "r", CreationTimestamp: metav1.NewTime(created)},
		Spec: opsv1alpha1.PostgresOpsRequestSpec{Type: opsv1alpha1.OpsRequestTypeRotateAuth},
		Status: opsv1alpha1.OpsRequestStatus{Phase: opsv1alpha1.OpsRequestPhaseProgressing, Conditions: []metav1.Condition{
			{Type: "RestartNodes", Status: metav1.ConditionFalse, Reason: "InProgress", Message: strings.Repeat("restarting pod db-1 ", 20), LastTransitionTime: metav1.NewTime(created.Add(time.Second))},
		}}}
	p.show(req)
	p.redraw()
	text := out.String()
	assert.Contains(t, text, "\r\033[K", "the live line is redrawn in place")
	for _, drawn := range strings.Split(text, "\r\033[K") {
		assert.LessOrEqual(t, len([]rune(drawn)), 80, "the live line never wraps: %q", drawn)
	}
	assert.NotContains(t, text, "\n", "nothing completed yet")
}

func TestStatusShowsRolesReplicationCredentialAndRequests(t *testing.T) {
	pg := postgres("db")
	changed := metav1.NewTime(time.Now().Add(-26 * time.Hour))
	pg.Status.AuthSecret = &kubedbv1.AuthSecretStatus{Name: "db-auth", LastUpdateTimestamp: &changed}
	pod := func(name, role string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{
			kubedbv1.LabelName: kubedbv1.NameValue, kubedbv1.LabelInstance: "db", kubedbv1.LabelRole: role}},
			Status: corev1.PodStatus{Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}}
	}
	created := metav1.NewTime(time.Now().Add(-time.Hour))
	done := metav1.NewTime(created.Add(2600 * time.Millisecond))
	req := &opsv1alpha1.PostgresOpsRequest{ObjectMeta: metav1.ObjectMeta{Name: "db-rotate-auth-x", Namespace: ns, CreationTimestamp: created},
		Spec: opsv1alpha1.PostgresOpsRequestSpec{Type: opsv1alpha1.OpsRequestTypeRotateAuth, DatabaseRef: opsv1alpha1.DatabaseReference{Name: "db"}},
		Status: opsv1alpha1.OpsRequestStatus{Phase: opsv1alpha1.OpsRequestPhaseSuccessful, Conditions: []metav1.Condition{
			{Type: "Successful", Status: metav1.ConditionTrue, LastTransitionTime: done}}}}
	other := req.DeepCopy()
	other.Name, other.Spec.DatabaseRef.Name = "other-rotate", "other"
	h := newHarness(t, []runtime.Object{pg, req, other},
		pod("db-0", kubedbv1.RolePrimary), pod("db-1", kubedbv1.RoleStandby), pod("db-2", kubedbv1.RoleStandby),
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: ns}, Spec: corev1.ServiceSpec{ClusterIP: "10.0.0.7", Ports: []corev1.ServicePort{{Name: "primary", Port: 5432}}}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "db-auth", Namespace: ns}, Data: map[string][]byte{"username": []byte("postgres"), "password": []byte("Sup3r-Secret-Pw")}})
	h.lags = []credential.StandbyLag{{Name: "db-1", State: "streaming", SyncState: "async", ReplayLagBytes: 0, ReplayLagSeconds: 0}}

	require.NoError(t, h.run(t, "status", "db", "--connect", "service"))
	out := h.out.String()
	assert.Equal(t, "10.0.0.7", h.target.Host)
	assert.Equal(t, "postgres", h.target.User)
	assert.NotContains(t, out, "Sup3r-Secret-Pw")
	for _, want := range []string{"Phase:", "Ready", "db-0", "primary", "db-1", "streaming", "async", "0 B (0.0s)",
		"db-2", "not connected", "Auth Secret:", "db-auth", "Credential age:", "26h", "db-rotate-auth-x", "Successful", "2.6s"} {
		assert.Contains(t, out, want)
	}
	assert.NotContains(t, out, "other-rotate", "only this database's requests")
}

func TestPassfileLineEscapesAndRefusesLineBreaks(t *testing.T) {
	line, err := passfileLine("127.0.0.1", 5432, "post:gres", `pa\ss:word`)
	require.NoError(t, err)
	assert.Equal(t, `127.0.0.1:5432:*:post\:gres:pa\\ss\:word`+"\n", line)
	_, err = passfileLine("h", 1, "u", "two\nlines")
	assert.Error(t, err)
}

func TestPlainProgressAnnouncesWhatAStepSaysWhenItChanges(t *testing.T) {
	var out bytes.Buffer
	p := newProgress(&out, false, time.Now)
	req := &opsv1alpha1.PostgresOpsRequest{Status: opsv1alpha1.OpsRequestStatus{Phase: opsv1alpha1.OpsRequestPhaseProgressing}}
	for _, msg := range []string{"waiting for pod db-1", "waiting for pod db-1", "retrying:\x1b[2J password authentication failed"} {
		req.Status.Conditions = []metav1.Condition{{Type: "RestartNodes", Status: metav1.ConditionFalse, Reason: "InProgress", Message: msg}}
		p.show(req)
	}
	assert.Equal(t, "… RestartNodes: waiting for pod db-1\n… RestartNodes: retrying: [2J password authentication failed\n", out.String(),
		"once per change, and no control character reaches the terminal")
}

func TestFollowBacksOffWhenWatchesCloseAtOnce(t *testing.T) {
	h := newHarness(t, []runtime.Object{&opsv1alpha1.PostgresOpsRequest{ObjectMeta: metav1.ObjectMeta{Name: "r", Namespace: ns}}})
	watches := 0
	h.pgops.PrependWatchReactor("postgresopsrequests", func(clienttesting.Action) (bool, watch.Interface, error) {
		watches++
		w := watch.NewFake()
		w.Stop() // closed at once
		return true, w, nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	clients := &Clients{Namespace: ns, Kube: h.kube, Pgops: h.pgops}
	req, err := h.pgops.OpsV1alpha1().PostgresOpsRequests(ns).Get(ctx, "r", metav1.GetOptions{})
	require.NoError(t, err)
	_, err = follow(ctx, clients, req, newProgress(io.Discard, false, time.Now))
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.LessOrEqual(t, watches, 5, "200 ms, 400 ms, 800 ms between watches, not a busy loop")
}

func TestPsqlConnectsWithOneQuotedConninfoAndNoneOfTheUsersPGVariables(t *testing.T) {
	assert.Equal(t, `dbname='postgres' host='10.0.0.7' passfile='/tmp/x y/pgpass' user='o\'neil\\'`,
		conninfoString(map[string]string{"host": "10.0.0.7", "user": `o'neil\`, "dbname": "postgres", "passfile": "/tmp/x y/pgpass"}))
	assert.Equal(t, []string{"HOME=/root", "PSQLRC=/x", "PAGER=less"},
		withoutPGVariables([]string{"HOME=/root", "PGHOSTADDR=127.0.0.2", "PSQLRC=/x", "PGPASSWORD=p", "PGSERVICE=evil", "PAGER=less"}))
}

func TestASignalEndsACommandWithItsExitCode(t *testing.T) {
	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(interrupted{syscall.SIGTERM})
	assert.Equal(t, ExitCode(143), interruptedExitCode(ctx))
	assert.Equal(t, ExitCode(130), interruptedExitCode(context.Background()), "Ctrl-C when the cause is unknown")
}

func TestFollowSaysSoWhenTheRequestIsDeletedBeforeItEnds(t *testing.T) {
	req := &opsv1alpha1.PostgresOpsRequest{ObjectMeta: metav1.ObjectMeta{Name: "r", Namespace: ns}}
	h := newHarness(t, []runtime.Object{req})
	fw := watch.NewFake()
	h.pgops.PrependWatchReactor("postgresopsrequests", func(clienttesting.Action) (bool, watch.Interface, error) {
		go fw.Delete(req.DeepCopy())
		return true, fw, nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := follow(ctx, &Clients{Namespace: ns, Kube: h.kube, Pgops: h.pgops}, req, newProgress(io.Discard, false, time.Now))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "PostgresOpsRequest r was deleted before it ended")
}
