package provisioner

import (
	"strings"

	"github.com/pgops/pgops/pkg/agent"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	kubedbv1 "github.com/pgops/pgops/pkg/apis/kubedb/v1"
)

// Labels, annotations and names from docs/architecture.md; the shared ones come from the API
// package so both operators agree on them.
const (
	LabelName      = kubedbv1.LabelName
	LabelInstance  = kubedbv1.LabelInstance
	LabelManagedBy = kubedbv1.LabelManagedBy
	LabelRole      = kubedbv1.LabelRole

	NameValue      = kubedbv1.NameValue
	ManagedByValue = kubedbv1.ManagedByValue

	RolePrimary = kubedbv1.RolePrimary
	RoleStandby = kubedbv1.RoleStandby

	// AnnotationAuthActiveFrom is when the Secret's current credential became active (RFC 3339).
	AnnotationAuthActiveFrom = kubedbv1.AuthActiveFromAnnotation
	// AnnotationAuthRotation is the pod template annotation the ops-manager sets when it
	// points the pods at a new credential; the provisioner preserves it.
	AnnotationAuthRotation = kubedbv1.AuthRotationAnnotation

	// Finalizer keeps a Postgres until the provisioner has applied its deletion policy.
	Finalizer = "kubedb.com/finalizer"

	// PostgresPort is the port PostgreSQL listens on in pods and Services.
	PostgresPort = kubedbv1.PostgresPort
	// ContainerName is the database container.
	ContainerName = "postgres"
	// DataVolume is the data volume and volumeClaimTemplate name.
	DataVolume = "data"
	// AgentVolume is the emptyDir into which the init container AgentInitContainer
	// installs the agent from the operator image (AgentImageBinary), and from which the
	// database container runs it as AgentMount/AgentBinary.
	AgentVolume        = "pgops-agent"
	AgentMount         = "/pgops/bin"
	AgentBinary        = agent.ProcessName
	AgentInitContainer = "install-agent"
	AgentImageBinary   = "/usr/local/bin/pgops-agent"
	// AgentPortName is the container port where the agent answers the kubelet's probes.
	AgentPortName = agent.PortName
	// legacyScriptsVolume held the shell entrypoint's ConfigMap in pods of earlier
	// releases; the ConfigMap stays until no pod mounts it (retireEntrypointConfigMap).
	legacyScriptsVolume = "scripts"
	DataMount           = "/var/pv"
	PGDataPath          = "/var/pv/data"
	// RunVolume is a writable emptyDir for the Unix socket and lock files, in the
	// directory the official images use, so `psql` in the pod finds the server without
	// options. The root file system is read-only.
	RunVolume = "run"
	RunMount  = "/var/run/postgresql"
	// TmpVolume is a writable /tmp.
	TmpVolume   = "tmp"
	TmpMount    = "/tmp"
	DefaultUser = "postgres"
)

func authSecretName(pg *kubedbv1.Postgres) string             { return pg.Name + "-auth" }
func legacyScriptsConfigMapName(pg *kubedbv1.Postgres) string { return pg.Name + "-scripts" }
func governingServiceName(pg *kubedbv1.Postgres) string       { return pg.Name + "-pods" }
func primaryServiceName(pg *kubedbv1.Postgres) string         { return pg.Name }
func standbyServiceName(pg *kubedbv1.Postgres) string         { return pg.Name + "-standby" }
func statefulSetName(pg *kubedbv1.Postgres) string            { return pg.Name }

// serviceHostEnv is the variable the kubelet injects with a Service's ClusterIP.
func serviceHostEnv(service string) string {
	return strings.ToUpper(strings.ReplaceAll(service, "-", "_")) + "_SERVICE_HOST"
}

// servicePortEnv is the variable the kubelet injects with a Service's first port.
func servicePortEnv(service string) string {
	return strings.ToUpper(strings.ReplaceAll(service, "-", "_")) + "_SERVICE_PORT"
}

// selectorLabels select all pods of pg; they are also the StatefulSet's immutable selector.
func selectorLabels(pg *kubedbv1.Postgres) map[string]string {
	return map[string]string{
		LabelName:      NameValue,
		LabelInstance:  pg.Name,
		LabelManagedBy: ManagedByValue,
	}
}

// ownedLabels are the labels on every object the provisioner creates for pg.
func ownedLabels(pg *kubedbv1.Postgres) map[string]string { return selectorLabels(pg) }

func ownerRef(pg *kubedbv1.Postgres) metav1.OwnerReference {
	return *metav1.NewControllerRef(pg, kubedbv1.SchemeGroupVersion.WithKind(kubedbv1.ResourceKindPostgres))
}

// isOwnedBy reports whether obj's controller owner reference points at pg.
func isOwnedBy(obj metav1.Object, pg *kubedbv1.Postgres) bool {
	ref := metav1.GetControllerOf(obj)
	return ref != nil && ref.Kind == kubedbv1.ResourceKindPostgres && ref.UID == pg.UID
}

func replicas(pg *kubedbv1.Postgres) int32 {
	if pg.Spec.Replicas == nil || *pg.Spec.Replicas < 1 {
		return 1
	}
	return *pg.Spec.Replicas
}

func standbyMode(pg *kubedbv1.Postgres) kubedbv1.StandbyMode {
	if pg.Spec.StandbyMode == nil || *pg.Spec.StandbyMode == "" {
		return kubedbv1.StandbyModeHot
	}
	return *pg.Spec.StandbyMode
}

func deletionPolicy(pg *kubedbv1.Postgres) kubedbv1.DeletionPolicy {
	if pg.Spec.DeletionPolicy == "" {
		return kubedbv1.DeletionPolicyDelete
	}
	return pg.Spec.DeletionPolicy
}

func isEphemeral(pg *kubedbv1.Postgres) bool {
	return pg.Spec.StorageType == kubedbv1.StorageTypeEphemeral
}

func mergeMaps(dst map[string]string, srcs ...map[string]string) map[string]string {
	if dst == nil {
		dst = map[string]string{}
	}
	for _, src := range srcs {
		for k, v := range src {
			dst[k] = v
		}
	}
	return dst
}
