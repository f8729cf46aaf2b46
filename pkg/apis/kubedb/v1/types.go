package v1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
)

// Resource names of the Postgres kind, as KubeDB names them.
const (
	ResourceKindPostgres     = "Postgres"
	ResourceSingularPostgres = "postgres"
	ResourcePluralPostgres   = "postgreses"
)

// Postgres is a PostgreSQL database that the provisioner runs as a StatefulSet.
//
// +genclient
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
// +kubebuilder:object:root=true
// +kubebuilder:resource:path=postgreses,singular=postgres,shortName=pg,categories={datastore,kubedb,all}
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Version",type="string",JSONPath=".spec.version"
// +kubebuilder:printcolumn:name="Status",type="string",JSONPath=".status.phase"
// +kubebuilder:printcolumn:name="Age",type="date",JSONPath=".metadata.creationTimestamp"
type Postgres struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   PostgresSpec   `json:"spec,omitempty"`
	Status PostgresStatus `json:"status,omitempty"`
}

// PostgresSpec is the desired state of a Postgres. Halt keeps a database's data only where
// the data outlives its pods: with storageType Ephemeral the data is in the pods' emptyDir,
// so the API server refuses a promise to keep it (as KubeDB refuses Halt there).
// +kubebuilder:validation:XValidation:rule="!has(self.storageType) || self.storageType != 'Ephemeral' || !has(self.deletionPolicy) || self.deletionPolicy != 'Halt'",message="spec.deletionPolicy: Halt keeps data, but storageType Ephemeral keeps none once the pods are gone; use Delete or WipeOut, or Durable storage"
// +kubebuilder:validation:XValidation:rule="!has(self.storageType) || self.storageType != 'Ephemeral' || !has(self.halted) || !self.halted",message="spec.halted: halting removes the pods, and with storageType Ephemeral their data with them; use Durable storage to halt a database"
type PostgresSpec struct {
	// Version of PostgreSQL to run, for example "16.4". The provisioner maps it to an image.
	// +kubebuilder:validation:MinLength=1
	Version string `json:"version"`

	// Replicas is the number of PostgreSQL pods: one primary and replicas-1 standbys.
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=1
	// +optional
	Replicas *int32 `json:"replicas,omitempty"`

	// StandbyMode says whether standbys accept read-only queries (Hot) or not (Warm).
	// +kubebuilder:default=Hot
	// +optional
	StandbyMode *StandbyMode `json:"standbyMode,omitempty"`

	// StreamingMode says whether the primary waits for standbys to confirm each commit
	// (Synchronous) or not (Asynchronous, the default). Synchronous needs replicas > 1;
	// synchronousReplicationConfig says how many standbys and how far they confirm.
	// +optional
	StreamingMode *StreamingMode `json:"streamingMode,omitempty"`

	// SynchronousReplicationConfig shapes synchronous_standby_names and
	// synchronous_commit when streamingMode is Synchronous; ignored otherwise. Without it,
	// a commit waits for any one standby to have written it (ANY 1, remote_write).
	// +optional
	SynchronousReplicationConfig *SynchronousReplicationConfig `json:"synchronousReplicationConfig,omitempty"`

	// StorageType says whether data survives pod restarts (Durable, on PVCs) or not
	// (Ephemeral, on emptyDir). It cannot change after creation.
	// +kubebuilder:default=Durable
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="storageType is immutable"
	// +optional
	StorageType StorageType `json:"storageType,omitempty"`

	// Storage is the claim template for each pod's data volume when storageType is Durable.
	// +optional
	Storage *corev1.PersistentVolumeClaimSpec `json:"storage,omitempty"`

	// AuthSecret names the Secret holding the superuser's username and password. When empty,
	// the provisioner generates "<name>-auth" and writes its name back here.
	// +optional
	AuthSecret *SecretReference `json:"authSecret,omitempty"`

	// DeletionPolicy says what deleting the Postgres removes.
	// +kubebuilder:default=Delete
	// +optional
	DeletionPolicy DeletionPolicy `json:"deletionPolicy,omitempty"`

	// Halted stops the database: pods and Services are removed, PVCs and the Secret stay.
	// +optional
	Halted bool `json:"halted,omitempty"`

	// PodTemplate customizes the database pods.
	// +optional
	PodTemplate PodTemplateSpec `json:"podTemplate,omitempty"`

	// ServiceTemplates customize the primary and standby Services.
	// +listType=map
	// +listMapKey=alias
	// +optional
	ServiceTemplates []NamedServiceTemplateSpec `json:"serviceTemplates,omitempty"`

	// ClientAuthMode is accepted for compatibility with KubeDB; pgops always uses scram.
	// +optional
	ClientAuthMode ClientAuthMode `json:"clientAuthMode,omitempty"`

	// SSLMode is accepted for compatibility with KubeDB; pgops does not configure TLS yet.
	// +optional
	SSLMode SSLMode `json:"sslMode,omitempty"`

	// KubeDB fields that pgops accepts so KubeDB manifests apply unchanged, and ignores.

	// LeaderElection: leader election and failover settings of KubeDB's coordinator (pgops does not fail over). Accepted for compatibility with KubeDB and ignored: pgops does not act on it.
	// +kubebuilder:pruning:PreserveUnknownFields
	// +kubebuilder:validation:Schemaless
	// +kubebuilder:validation:Type=object
	// +optional
	LeaderElection *runtime.RawExtension `json:"leaderElection,omitempty"`
	// Init: initialisation from a script or a snapshot. Accepted for compatibility with KubeDB and ignored: pgops does not act on it.
	// +kubebuilder:pruning:PreserveUnknownFields
	// +kubebuilder:validation:Schemaless
	// +kubebuilder:validation:Type=object
	// +optional
	Init *runtime.RawExtension `json:"init,omitempty"`
	// Monitor: a metrics exporter sidecar (the operators expose their own metrics). Accepted for compatibility with KubeDB and ignored: pgops does not act on it.
	// +kubebuilder:pruning:PreserveUnknownFields
	// +kubebuilder:validation:Schemaless
	// +kubebuilder:validation:Type=object
	// +optional
	Monitor *runtime.RawExtension `json:"monitor,omitempty"`
	// ConfigSecret: a Secret with a custom postgresql.conf. Accepted for compatibility
	// with KubeDB and ignored: pgops does not act on it.
	// +optional
	ConfigSecret *corev1.LocalObjectReference `json:"configSecret,omitempty"`
	// Configuration: custom postgresql.conf settings. Accepted for compatibility with KubeDB and ignored: pgops does not act on it.
	// +kubebuilder:pruning:PreserveUnknownFields
	// +kubebuilder:validation:Schemaless
	// +kubebuilder:validation:Type=object
	// +optional
	Configuration *runtime.RawExtension `json:"configuration,omitempty"`
	// TLS: TLS certificates (the database serves no TLS yet). Accepted for compatibility with KubeDB and ignored: pgops does not act on it.
	// +kubebuilder:pruning:PreserveUnknownFields
	// +kubebuilder:validation:Schemaless
	// +kubebuilder:validation:Type=object
	// +optional
	TLS *runtime.RawExtension `json:"tls,omitempty"`
	// HealthChecker: the health check period (see the provisioner's --status-period). Accepted for compatibility with KubeDB and ignored: pgops does not act on it.
	// +kubebuilder:pruning:PreserveUnknownFields
	// +kubebuilder:validation:Schemaless
	// +kubebuilder:validation:Type=object
	// +optional
	HealthChecker *runtime.RawExtension `json:"healthChecker,omitempty"`
	// AllowedSchemas: which schema objects may refer to the database. Accepted for compatibility with KubeDB and ignored: pgops does not act on it.
	// +kubebuilder:pruning:PreserveUnknownFields
	// +kubebuilder:validation:Schemaless
	// +kubebuilder:validation:Type=object
	// +optional
	AllowedSchemas *runtime.RawExtension `json:"allowedSchemas,omitempty"`
	// Replication: WAL retention settings (pgops keeps wal_keep_size 256MB). Accepted for compatibility with KubeDB and ignored: pgops does not act on it.
	// +kubebuilder:pruning:PreserveUnknownFields
	// +kubebuilder:validation:Schemaless
	// +kubebuilder:validation:Type=object
	// +optional
	Replication *runtime.RawExtension `json:"replication,omitempty"`
}

// StandbyMode is Hot or Warm.
// +kubebuilder:validation:Enum=Hot;Warm
type StandbyMode string

const (
	StandbyModeHot  StandbyMode = "Hot"
	StandbyModeWarm StandbyMode = "Warm"
)

// StreamingMode is Synchronous or Asynchronous.
// +kubebuilder:validation:Enum=Synchronous;Asynchronous
type StreamingMode string

const (
	StreamingModeSynchronous  StreamingMode = "Synchronous"
	StreamingModeAsynchronous StreamingMode = "Asynchronous"
)

// SynchronousReplicationConfig is KubeDB's synchronous replication API. It renders
// synchronous_standby_names as "<MODE> <numSyncReplicas> (<standbys>)".
// +kubebuilder:validation:XValidation:rule="!(has(self.useWildcard) && self.useWildcard && has(self.standbyNames) && size(self.standbyNames) > 0)",message="standbyNames and useWildcard are mutually exclusive"
type SynchronousReplicationConfig struct {
	// Mode is Any (a quorum: any numSyncReplicas standbys confirm) or First (the first
	// numSyncReplicas standbys of the list, in order, confirm; the others stand by).
	// +kubebuilder:default=Any
	// +optional
	Mode SynchronousMode `json:"mode,omitempty"`

	// NumSyncReplicas is how many standbys confirm each commit. At least 1, and fewer
	// than replicas (at most the number of standbyNames when they are given).
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=1
	// +optional
	NumSyncReplicas *int32 `json:"numSyncReplicas,omitempty"`

	// CommitLevel is synchronous_commit: RemoteWrite (the default: a standby has written
	// the commit), On (a standby has flushed it to disk), RemoteApply (a standby's queries
	// see it), Local or Off (no standby is waited for). Quote "On" and "Off" in YAML.
	// +kubebuilder:default=RemoteWrite
	// +optional
	CommitLevel SynchronousCommitLevel `json:"commitLevel,omitempty"`

	// StandbyNames lists the standbys (pod names, which are their application_name) that
	// may confirm, in priority order for First. Default: every standby pod, by ordinal.
	// +kubebuilder:validation:MaxItems=64
	// +listType=atomic
	// +optional
	StandbyNames []string `json:"standbyNames,omitempty"`

	// UseWildcard lets any connected standby confirm ("*"). Exclusive with standbyNames.
	// +optional
	UseWildcard bool `json:"useWildcard,omitempty"`
}

// SynchronousMode is Any (quorum) or First (priority).
// +kubebuilder:validation:Enum=Any;First
type SynchronousMode string

const (
	SynchronousModeAny   SynchronousMode = "Any"
	SynchronousModeFirst SynchronousMode = "First"
)

// SynchronousCommitLevel maps to synchronous_commit.
// +kubebuilder:validation:Enum=On;RemoteApply;RemoteWrite;Local;Off
type SynchronousCommitLevel string

const (
	SynchronousCommitOn          SynchronousCommitLevel = "On"
	SynchronousCommitRemoteApply SynchronousCommitLevel = "RemoteApply"
	SynchronousCommitRemoteWrite SynchronousCommitLevel = "RemoteWrite"
	SynchronousCommitLocal       SynchronousCommitLevel = "Local"
	SynchronousCommitOff         SynchronousCommitLevel = "Off"
)

// StorageType is Durable or Ephemeral.
// +kubebuilder:validation:Enum=Durable;Ephemeral
type StorageType string

const (
	StorageTypeDurable   StorageType = "Durable"
	StorageTypeEphemeral StorageType = "Ephemeral"
)

// DeletionPolicy says what deleting a Postgres removes.
// +kubebuilder:validation:Enum=Halt;Delete;WipeOut;DoNotTerminate
type DeletionPolicy string

const (
	// DeletionPolicyHalt removes pods and Services, and keeps PVCs and the auth Secret.
	DeletionPolicyHalt DeletionPolicy = "Halt"
	// DeletionPolicyDelete removes workloads and Services, and keeps PVCs and a user's Secret.
	DeletionPolicyDelete DeletionPolicy = "Delete"
	// DeletionPolicyWipeOut removes everything the operator created, data included.
	DeletionPolicyWipeOut DeletionPolicy = "WipeOut"
	// DeletionPolicyDoNotTerminate refuses deletion.
	DeletionPolicyDoNotTerminate DeletionPolicy = "DoNotTerminate"
)

// ClientAuthMode is how clients authenticate, as KubeDB names it.
// +kubebuilder:validation:Enum=md5;scram;cert
type ClientAuthMode string

// SSLMode is libpq's sslmode, as KubeDB names it.
// +kubebuilder:validation:Enum=disable;allow;prefer;require;verify-ca;verify-full
type SSLMode string

// SecretReference points at the Secret holding the database's superuser credential.
type SecretReference struct {
	// Name of the Secret, in the Postgres's namespace.
	// +optional
	Name string `json:"name,omitempty"`

	// Kind of the referent. Only Secret is supported.
	// +kubebuilder:default=Secret
	// +kubebuilder:validation:Enum=Secret
	// +optional
	Kind string `json:"kind,omitempty"`

	// APIGroup of the referent; "" for core Secrets.
	// +kubebuilder:default=""
	// +optional
	APIGroup string `json:"apiGroup,omitempty"`

	// ExternallyManaged is true when the user, not the operator, owns the Secret.
	// +optional
	ExternallyManaged bool `json:"externallyManaged,omitempty"`

	// ActiveFrom is when the current credential became active.
	// +optional
	ActiveFrom *metav1.Time `json:"activeFrom,omitempty"`

	// RotateAfter makes pgops rotate a generated credential by itself once it is older than
	// this (from the Secret's kubedb.com/auth-active-from, else activeFrom, else the Secret's
	// creation): the provisioner creates a RotateAuth PostgresOpsRequest labelled
	// ops.kubedb.com/trigger=scheduled. A Secret of the user's (externallyManaged) is never
	// rotated on a schedule.
	// +optional
	RotateAfter *metav1.Duration `json:"rotateAfter,omitempty"`

	// RotationRestart is the restart mode (spec.rotateAuth.restart) of the RotateAuth
	// requests pgops creates by itself: on the rotateAfter schedule, and for a change of
	// name to a Secret PostgreSQL does not accept yet (a pgops extension). Default AllPods.
	// +kubebuilder:validation:Enum=AllPods;StandbysOnly;None
	// +optional
	RotationRestart string `json:"rotationRestart,omitempty"`
}

// PodTemplateSpec customizes the database pods, a subset of KubeDB's offshoot template.
type PodTemplateSpec struct {
	// Metadata is added to each database pod's labels and annotations; the provisioner's
	// selector labels win.
	// +optional
	Metadata PodTemplateMetadata `json:"metadata,omitempty"`

	// Controller is accepted for compatibility with KubeDB and ignored.
	// +kubebuilder:pruning:PreserveUnknownFields
	// +kubebuilder:validation:Schemaless
	// +kubebuilder:validation:Type=object
	// +optional
	Controller *runtime.RawExtension `json:"controller,omitempty"`

	// Spec customizes the database pods.
	// +optional
	Spec PodSpec `json:"spec,omitempty"`
}

// PodTemplateMetadata is the labels and annotations added to each pod.
type PodTemplateMetadata struct {
	// Labels to add.
	// +optional
	Labels map[string]string `json:"labels,omitempty"`
	// Annotations to add.
	// +optional
	Annotations map[string]string `json:"annotations,omitempty"`
}

// PodSpec is the subset of a pod spec that users may set on database pods.
type PodSpec struct {
	// Containers customize the operator's containers, matched by name ("postgres").
	// +listType=map
	// +listMapKey=name
	// +optional
	Containers []ContainerSpec `json:"containers,omitempty"`
	// NodeSelector restricts the nodes the pods run on.
	// +optional
	NodeSelector map[string]string `json:"nodeSelector,omitempty"`
	// Tolerations of the pods.
	// +optional
	Tolerations []corev1.Toleration `json:"tolerations,omitempty"`
	// Affinity replaces the default one, which prefers spreading the pods across nodes.
	// +optional
	Affinity *corev1.Affinity `json:"affinity,omitempty"`
	// SecurityContext overrides the fields it sets of the default pod security context
	// (uid, gid and fsGroup 999, runAsNonRoot, seccomp RuntimeDefault: Pod Security
	// "restricted"); the others keep their defaults.
	// +optional
	SecurityContext *corev1.PodSecurityContext `json:"securityContext,omitempty"`
	// ServiceAccountName the pods run as.
	// +optional
	ServiceAccountName string `json:"serviceAccountName,omitempty"`
	// ImagePullSecrets for the PostgreSQL image.
	// +optional
	ImagePullSecrets []corev1.LocalObjectReference `json:"imagePullSecrets,omitempty"`
}

// ContainerSpec customizes one of the operator's containers.
type ContainerSpec struct {
	// Name of the container: "postgres"; other names are ignored.
	Name string `json:"name"`
	// Resources replace the default requests (250m CPU, 256Mi memory, no limits).
	// +optional
	Resources corev1.ResourceRequirements `json:"resources,omitempty"`
	// Env is added to the operator's own environment; it cannot override the credential.
	// +optional
	Env []corev1.EnvVar `json:"env,omitempty"`
	// SecurityContext overrides the fields it sets of the default container security
	// context (no capabilities, no privilege escalation, read-only root).
	// +optional
	SecurityContext *corev1.SecurityContext `json:"securityContext,omitempty"`
}

// ServiceAlias names one of the database's Services.
// +kubebuilder:validation:Enum=primary;standby;stats
type ServiceAlias string

const (
	PrimaryServiceAlias ServiceAlias = "primary"
	StandbyServiceAlias ServiceAlias = "standby"
	StatsServiceAlias   ServiceAlias = "stats"
)

// NamedServiceTemplateSpec customizes the Service with the given alias.
type NamedServiceTemplateSpec struct {
	// Alias is the Service: primary ("<name>"), standby ("<name>-standby") or stats
	// (accepted and ignored: pgops creates no stats Service).
	Alias ServiceAlias `json:"alias"`
	// Metadata is added to the Service's labels and annotations.
	// +optional
	Metadata PodTemplateMetadata `json:"metadata,omitempty"`
	// Spec customizes the Service.
	// +optional
	Spec ServiceSpec `json:"spec,omitempty"`
}

// ServiceSpec is the subset of a Service spec that users may set.
type ServiceSpec struct {
	// Type of the Service (default ClusterIP).
	// +optional
	Type corev1.ServiceType `json:"type,omitempty"`
	// Ports replace the default port 5432; each targets PostgreSQL's port.
	// +listType=map
	// +listMapKey=port
	// +optional
	Ports []ServicePort `json:"ports,omitempty"`
	// ExternalTrafficPolicy of a NodePort or LoadBalancer Service.
	// +optional
	ExternalTrafficPolicy corev1.ServiceExternalTrafficPolicy `json:"externalTrafficPolicy,omitempty"`
	// LoadBalancerSourceRanges restricts the clients of a LoadBalancer Service.
	// +optional
	LoadBalancerSourceRanges []string `json:"loadBalancerSourceRanges,omitempty"`
}

// ServicePort is one port of a database Service.
type ServicePort struct {
	// Name of the port.
	// +optional
	Name string `json:"name,omitempty"`
	// Port the Service listens on.
	Port int32 `json:"port"`
	// NodePort of a NodePort or LoadBalancer Service; allocated when 0.
	// +optional
	NodePort int32 `json:"nodePort,omitempty"`
}

// DatabasePhase is the coarse state of a database.
// +kubebuilder:validation:Enum=Provisioning;Ready;Critical;NotReady;Halted;Unknown
type DatabasePhase string

const (
	// DatabasePhaseProvisioning: not all up yet since creation.
	DatabasePhaseProvisioning DatabasePhase = "Provisioning"
	// DatabasePhaseReady: the primary and every standby accept connections.
	DatabasePhaseReady DatabasePhase = "Ready"
	// DatabasePhaseCritical: the primary accepts connections, a standby does not.
	DatabasePhaseCritical DatabasePhase = "Critical"
	// DatabasePhaseNotReady: the primary does not accept connections.
	DatabasePhaseNotReady DatabasePhase = "NotReady"
	// DatabasePhaseHalted: halted on purpose; pods are gone, data is kept.
	DatabasePhaseHalted DatabasePhase = "Halted"
	// DatabasePhaseUnknown: the operator cannot tell.
	DatabasePhaseUnknown DatabasePhase = "Unknown"
)

// Condition types on a Postgres, as KubeDB names them.
const (
	ConditionProvisioningStarted = "ProvisioningStarted"
	ConditionReplicaReady        = "ReplicaReady"
	ConditionAcceptingConnection = "AcceptingConnection"
	ConditionReady               = "Ready"
	ConditionProvisioned         = "Provisioned"
	// ConditionPaused is the pause: the provisioner sets it True, with status.pausedBy, once
	// it has stopped reconciling workloads for the ops request that asks for it (in that
	// request's status). Unknown is the ask of ops-managers before pgops asked in the
	// request, still answered.
	ConditionPaused = "Paused"
	// ConditionSynchronousReplication (a pgops extension) is present while streamingMode
	// is Synchronous: True when at least numSyncReplicas standbys confirm commits, False
	// when fewer do (commits on the primary wait).
	ConditionSynchronousReplication = "SynchronousReplication"
)

// PostgresStatus is the observed state of a Postgres.
type PostgresStatus struct {
	// Phase is Provisioning, Ready, Critical (the primary is up, a standby is not, or
	// fewer synchronous standbys than asked confirm commits), NotReady, Halted or Unknown.
	// +optional
	Phase DatabasePhase `json:"phase,omitempty"`
	// ObservedGeneration is the spec generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Conditions: KubeDB's ProvisioningStarted, ReplicaReady, AcceptingConnection,
	// Provisioned and Ready, and pgops's Paused, CredentialRotation and
	// SynchronousReplication.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// AuthSecret records when the credential last changed and which Secret holds the one
	// PostgreSQL accepts.
	// +optional
	AuthSecret *AuthSecretStatus `json:"authSecret,omitempty"`
	// PausedBy names the ops request that holds the pause (with condition Paused), or,
	// without the condition, the one that held it last and gave it back; a pgops
	// extension. The provisioner grants a pause to one running request at a time and once
	// per request, and drops a pause whose request is gone, replaced or ended.
	// +optional
	PausedBy *OpsRequestReference `json:"pausedBy,omitempty"`
}

// OpsRequestReference names one ops request, by name and UID: a request deleted and
// created again under the same name is another request.
type OpsRequestReference struct {
	// Name of the ops request.
	Name string `json:"name"`
	// UID of the ops request.
	UID types.UID `json:"uid"`
}

// AuthSecretStatus records the credential in use.
type AuthSecretStatus struct {
	// LastUpdateTimestamp is when the credential last changed.
	// +optional
	LastUpdateTimestamp *metav1.Time `json:"lastUpdateTimestamp,omitempty"`
	// Name is the Secret whose credential PostgreSQL accepts, the one the pods use (a pgops
	// extension). It differs from spec.authSecret.name while a change of that name is
	// rotated to: until the rotation ends, the database keeps running on this one.
	// +optional
	Name string `json:"name,omitempty"`
}

// PostgresList is a list of Postgres.
//
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
type PostgresList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Postgres `json:"items"`
}
