package v1

// Labels and annotations shared by the operators and the objects they create. The label
// names and values are KubeDB's, so tooling written for KubeDB finds the same objects.
const (
	LabelName      = "app.kubernetes.io/name"
	LabelInstance  = "app.kubernetes.io/instance"
	LabelManagedBy = "app.kubernetes.io/managed-by"
	// LabelRole marks a database pod as primary or standby.
	LabelRole = "kubedb.com/role"

	// NameValue is LabelName's value on every object that belongs to a Postgres.
	NameValue = "postgreses.kubedb.com"
	// ManagedByValue is LabelManagedBy's value on every object the operators create.
	ManagedByValue = "kubedb.com"

	RolePrimary = "primary"
	RoleStandby = "standby"

	// AuthActiveFromAnnotation on an auth Secret says since when its credential is active.
	AuthActiveFromAnnotation = "kubedb.com/auth-active-from"
	// AuthRotationAnnotation on the StatefulSet's pod template names the rotation (the ops
	// request's UID) that last pointed the pods at a new credential. The ops-manager sets
	// it; the provisioner preserves it.
	AuthRotationAnnotation = "kubedb.com/auth-rotation"

	// AuthSupersededByAnnotation on a generated auth Secret names the user's Secret that a
	// rotation moved the database to: the generated one holds a credential PostgreSQL no
	// longer accepts, so the provisioner never adopts it for a new Postgres of that name.
	AuthSupersededByAnnotation = "kubedb.com/auth-superseded-by"

	// Keys of an auth Secret.
	AuthUsernameKey     = "username"
	AuthPasswordKey     = "password"
	AuthPrevUsernameKey = "username.prev"
	AuthPrevPasswordKey = "password.prev"

	// PostgresPort is the port PostgreSQL listens on in every pod and Service.
	PostgresPort = 5432
)

// NeverPrunedAnnotations go on a generated auth Secret, which has no owner reference (so
// that no garbage collection takes the credential its data expects): Argo CD with label
// tracking counts an ownerless object labelled app.kubernetes.io/instance=<Application> as
// the Application's, and would prune it as not in Git. These tell Argo CD not to prune it
// and not to count it as out of sync.
func NeverPrunedAnnotations() map[string]string {
	return map[string]string{
		"argocd.argoproj.io/sync-options":    "Prune=false",
		"argocd.argoproj.io/compare-options": "IgnoreExtraneous",
	}
}

// ManagedBySelector selects the objects the operators create; informers for owned
// objects are filtered with it so unrelated objects are never cached.
const ManagedBySelector = LabelManagedBy + "=" + ManagedByValue
