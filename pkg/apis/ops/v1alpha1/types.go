package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
)

// Resource names of the PostgresOpsRequest kind, as KubeDB names them.
const (
	ResourceKindPostgresOpsRequest     = "PostgresOpsRequest"
	ResourceSingularPostgresOpsRequest = "postgresopsrequest"
	ResourcePluralPostgresOpsRequest   = "postgresopsrequests"
)

// PostgresOpsRequest asks the ops-manager to perform one day-2 operation on a Postgres.
//
// +genclient
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
// +kubebuilder:object:root=true
// +kubebuilder:resource:path=postgresopsrequests,singular=postgresopsrequest,shortName=pgops,categories={ops,kubedb,all}
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Type",type="string",JSONPath=".spec.type"
// +kubebuilder:printcolumn:name="Status",type="string",JSONPath=".status.phase"
// +kubebuilder:printcolumn:name="Age",type="date",JSONPath=".metadata.creationTimestamp"
type PostgresOpsRequest struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec cannot change once the request exists: create a new request instead.
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec is immutable: create a new PostgresOpsRequest instead"
	Spec   PostgresOpsRequestSpec `json:"spec"`
	Status OpsRequestStatus       `json:"status,omitempty"`
}

// PostgresOpsRequestSpec is the operation to perform.
type PostgresOpsRequestSpec struct {
	// Type of the operation. Only the types pgops implements are accepted.
	Type OpsRequestType `json:"type"`

	// DatabaseRef names the Postgres, in the request's namespace.
	DatabaseRef DatabaseReference `json:"databaseRef"`

	// Authentication gives the new credential for RotateAuth. Without it, the operator
	// generates a new password for the current user.
	// +optional
	Authentication *AuthSpec `json:"authentication,omitempty"`

	// RotateAuth tunes a RotateAuth: which pods restart (a pgops extension; KubeDB
	// manifests, which lack it, get KubeDB's behaviour).
	// +optional
	RotateAuth *RotateAuthOptions `json:"rotateAuth,omitempty"`

	// Timeout bounds each step of the operation, for example "5m". Default 10m.
	// +optional
	Timeout *metav1.Duration `json:"timeout,omitempty"`

	// Apply says when the operation may start: IfReady waits for the database to be Ready,
	// Always waits only for it to be provisioned.
	// +kubebuilder:default=IfReady
	// +optional
	Apply ApplyOption `json:"apply,omitempty"`

	// MaxRetries is accepted for compatibility with KubeDB and ignored.
	// +optional
	MaxRetries int32 `json:"maxRetries,omitempty"`

	// KubeDB fields of other operation types, accepted so KubeDB manifests apply, and ignored
	// (their types are rejected by the type enum).

	// Restart: KubeDB's Restart operation's settings. Accepted for compatibility with
	// KubeDB and ignored: pgops implements RotateAuth only (rotateAuth.restart chooses how
	// a rotation restarts pods).
	// +kubebuilder:pruning:PreserveUnknownFields
	// +kubebuilder:validation:Schemaless
	// +kubebuilder:validation:Type=object
	// +optional
	Restart *runtime.RawExtension `json:"restart,omitempty"`
}

// OpsRequestType is the operation to perform.
// +kubebuilder:validation:Enum=RotateAuth
type OpsRequestType string

const (
	// OpsRequestTypeRotateAuth replaces the database's superuser credential.
	OpsRequestTypeRotateAuth OpsRequestType = "RotateAuth"
)

// RotateAuthOptions tunes a RotateAuth.
type RotateAuthOptions struct {
	// Restart says which pods restart to pick up the new credential:
	//   - AllPods (default, as KubeDB): every pod, standbys first, the primary last;
	//   - StandbysOnly: standbys one at a time; the primary keeps running and keeps every
	//     client session (it needs no restart: the password is set over SQL);
	//   - None: no pod restarts; running hot standbys are re-pointed at the new credential
	//     over SQL. A standby that cannot be (a Warm standby accepts no connections; one
	//     whose pod names a Secret other than the new one would lose replication at its
	//     next container start) is restarted instead, and RestartNodes says so.
	// +kubebuilder:default=AllPods
	// +optional
	Restart RestartMode `json:"restart,omitempty"`
}

// RestartMode says which pods a RotateAuth restarts.
// +kubebuilder:validation:Enum=AllPods;StandbysOnly;None
type RestartMode string

const (
	RestartAllPods      RestartMode = "AllPods"
	RestartStandbysOnly RestartMode = "StandbysOnly"
	RestartNone         RestartMode = "None"
)

// ApplyOption says when an operation may start.
// +kubebuilder:validation:Enum=IfReady;Always
type ApplyOption string

const (
	ApplyOptionIfReady ApplyOption = "IfReady"
	ApplyOptionAlways  ApplyOption = "Always"
)

// DatabaseReference names a Postgres in the same namespace.
type DatabaseReference struct {
	// Name of the Postgres.
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`
}

// AuthSpec names the Secret holding a user-provided credential.
type AuthSpec struct {
	// +optional
	SecretRef *SecretReference `json:"secretRef,omitempty"`
}

// SecretReference points at a Secret in the request's namespace.
type SecretReference struct {
	// Name of the Secret: type kubernetes.io/basic-auth, keys username and password.
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`
	// Kind of the referent: Secret.
	// +kubebuilder:default=Secret
	// +kubebuilder:validation:Enum=Secret
	// +optional
	Kind string `json:"kind,omitempty"`
	// APIGroup of the referent: empty (the core group). Accepted for compatibility with
	// KubeDB.
	// +optional
	APIGroup string `json:"apiGroup,omitempty"`
}

// OpsRequestPhase is the coarse state of an ops request.
// +kubebuilder:validation:Enum=Pending;Progressing;Successful;Failed;Skipped
type OpsRequestPhase string

const (
	OpsRequestPhasePending     OpsRequestPhase = "Pending"
	OpsRequestPhaseProgressing OpsRequestPhase = "Progressing"
	OpsRequestPhaseSuccessful  OpsRequestPhase = "Successful"
	OpsRequestPhaseFailed      OpsRequestPhase = "Failed"
	OpsRequestPhaseSkipped     OpsRequestPhase = "Skipped"
)

// OpsRequestStatus is the observed progress of an ops request.
type OpsRequestStatus struct {
	// Phase is Pending, Progressing, Successful, Failed or Skipped.
	// +optional
	Phase OpsRequestPhase `json:"phase,omitempty"`
	// ObservedGeneration is the spec generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Conditions record each step; the ops-manager resumes from them after a restart.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// RotateAuth is what a RotateAuth request acts on, decided once when it starts and
	// never re-derived from caches afterwards (a pgops extension).
	// +optional
	RotateAuth *RotateAuthPlan `json:"rotateAuth,omitempty"`
}

// RotateAuthPlan records the objects and pods a RotateAuth works on. It holds names, never
// a credential.
type RotateAuthPlan struct {
	// DatabaseUID is the UID of the Postgres when the request started: a Postgres deleted
	// and created again under the same name is another database.
	DatabaseUID types.UID `json:"databaseUID"`
	// CurrentSecret is the auth Secret whose credential PostgreSQL accepted at the start.
	CurrentSecret string `json:"currentSecret"`
	// TargetSecret is the auth Secret the database uses once the new credential is set: the
	// user's Secret for a user-provided credential, else CurrentSecret.
	TargetSecret string `json:"targetSecret"`
	// StagedSecret holds the new credential from before PostgreSQL changes until the request
	// ends. It carries the ops-manager's finalizer, so nothing deletes it meanwhile.
	StagedSecret string `json:"stagedSecret"`
	// StorageType of the database at the start: an Ephemeral primary is never restarted,
	// because its data lives only in the pod.
	StorageType string `json:"storageType"`
	// RestartMode is spec.rotateAuth.restart, defaulted (AllPods when unset).
	// +optional
	RestartMode RestartMode `json:"restartMode,omitempty"`
	// RestartPods are the pods to restart, in order: standbys from the highest ordinal
	// down, then the primary when the mode is AllPods and its storage is not Ephemeral.
	// +optional
	RestartPods []string `json:"restartPods,omitempty"`
	// RepointPods are running standbys given the new credential over SQL instead of a
	// restart (mode None).
	// +optional
	RepointPods []string `json:"repointPods,omitempty"`
	// KeptPods are pods that keep running, with the reason in the RestartNodes condition.
	// +optional
	KeptPods []string `json:"keptPods,omitempty"`
	// Notes say why a pod is restarted or kept other than its mode alone says (an
	// Ephemeral primary, a Warm standby, a pod naming another Secret).
	// +optional
	Notes []string `json:"notes,omitempty"`
}

// PostgresOpsRequestList is a list of PostgresOpsRequest.
//
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
type PostgresOpsRequestList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []PostgresOpsRequest `json:"items"`
}
