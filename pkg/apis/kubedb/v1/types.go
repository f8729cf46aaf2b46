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

// PostgresSpec is the desired state of a Postgres.
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

	// StreamingMode says whether the primary waits for a standby to confirm each commit.
	// +optional
	StreamingMode *StreamingMode `json:"streamingMode,omitempty"`

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

	// +kubebuilder:pruning:PreserveUnknownFields
	// +kubebuilder:validation:Schemaless
	// +kubebuilder:validation:Type=object
	// +optional
	LeaderElection *runtime.RawExtension `json:"leaderElection,omitempty"`
	// +kubebuilder:pruning:PreserveUnknownFields
	// +kubebuilder:validation:Schemaless
	// +kubebuilder:validation:Type=object
	// +optional
	Init *runtime.RawExtension `json:"init,omitempty"`
	// +kubebuilder:pruning:PreserveUnknownFields
	// +kubebuilder:validation:Schemaless
	// +kubebuilder:validation:Type=object
	// +optional
	Monitor *runtime.RawExtension `json:"monitor,omitempty"`
	// +optional
	ConfigSecret *corev1.LocalObjectReference `json:"configSecret,omitempty"`
	// +kubebuilder:pruning:PreserveUnknownFields
	// +kubebuilder:validation:Schemaless
	// +kubebuilder:validation:Type=object
	// +optional
	Configuration *runtime.RawExtension `json:"configuration,omitempty"`
	// +kubebuilder:pruning:PreserveUnknownFields
	// +kubebuilder:validation:Schemaless
	// +kubebuilder:validation:Type=object
	// +optional
	TLS *runtime.RawExtension `json:"tls,omitempty"`
	// +kubebuilder:pruning:PreserveUnknownFields
	// +kubebuilder:validation:Schemaless
	// +kubebuilder:validation:Type=object
	// +optional
	HealthChecker *runtime.RawExtension `json:"healthChecker,omitempty"`
	// +kubebuilder:pruning:PreserveUnknownFields
	// +kubebuilder:validation:Schemaless
	// +kubebuilder:validation:Type=object
	// +optional
	AllowedSchemas *runtime.RawExtension `json:"allowedSchemas,omitempty"`
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
	// +optional
	Metadata PodTemplateMetadata `json:"metadata,omitempty"`

	// Controller is accepted for compatibility with KubeDB and ignored.
	// +kubebuilder:pruning:PreserveUnknownFields
	// +kubebuilder:validation:Schemaless
	// +kubebuilder:validation:Type=object
	// +optional
	Controller *runtime.RawExtension `json:"controller,omitempty"`

	// +optional
	Spec PodSpec `json:"spec,omitempty"`
}

// PodTemplateMetadata is the labels and annotations added to each pod.
type PodTemplateMetadata struct {
	// +optional
	Labels map[string]string `json:"labels,omitempty"`
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
	// +optional
	NodeSelector map[string]string `json:"nodeSelector,omitempty"`
	// +optional
	Tolerations []corev1.Toleration `json:"tolerations,omitempty"`
	// +optional
	Affinity *corev1.Affinity `json:"affinity,omitempty"`
	// +optional
	SecurityContext *corev1.PodSecurityContext `json:"securityContext,omitempty"`
	// +optional
	ServiceAccountName string `json:"serviceAccountName,omitempty"`
	// +optional
	ImagePullSecrets []corev1.LocalObjectReference `json:"imagePullSecrets,omitempty"`
}

// ContainerSpec customizes one of the operator's containers.
type ContainerSpec struct {
	Name string `json:"name"`
	// +optional
	Resources corev1.ResourceRequirements `json:"resources,omitempty"`
	// Env is added to the operator's own environment; it cannot override the credential.
	// +optional
	Env []corev1.EnvVar `json:"env,omitempty"`
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
	Alias ServiceAlias `json:"alias"`
	// +optional
	Metadata PodTemplateMetadata `json:"metadata,omitempty"`
	// +optional
	Spec ServiceSpec `json:"spec,omitempty"`
}

// ServiceSpec is the subset of a Service spec that users may set.
type ServiceSpec struct {
	// +optional
	Type corev1.ServiceType `json:"type,omitempty"`
	// +listType=map
	// +listMapKey=port
	// +optional
	Ports []ServicePort `json:"ports,omitempty"`
	// +optional
	ExternalTrafficPolicy corev1.ServiceExternalTrafficPolicy `json:"externalTrafficPolicy,omitempty"`
	// +optional
	LoadBalancerSourceRanges []string `json:"loadBalancerSourceRanges,omitempty"`
}

// ServicePort is one port of a database Service.
type ServicePort struct {
	// +optional
	Name string `json:"name,omitempty"`
	Port int32  `json:"port"`
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
	// ConditionPaused is the pause handshake: the ops-manager sets it Unknown to ask, the
	// provisioner sets it True once it has stopped reconciling workloads.
	ConditionPaused = "Paused"
)

// PostgresStatus is the observed state of a Postgres.
type PostgresStatus struct {
	// +optional
	Phase DatabasePhase `json:"phase,omitempty"`
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// AuthSecret records when the credential last changed and which Secret holds the one
	// PostgreSQL accepts.
	// +optional
	AuthSecret *AuthSecretStatus `json:"authSecret,omitempty"`
	// PausedBy names the ops request that holds the pause (condition Paused), a pgops
	// extension. The provisioner acknowledges a pause only for the request named here, and
	// drops a pause whose request is gone, replaced or ended.
	// +optional
	PausedBy *OpsRequestReference `json:"pausedBy,omitempty"`
}

// OpsRequestReference names one ops request, by name and UID: a request deleted and
// created again under the same name is another request.
type OpsRequestReference struct {
	Name string    `json:"name"`
	UID  types.UID `json:"uid"`
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
