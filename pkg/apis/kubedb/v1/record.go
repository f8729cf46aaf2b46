package v1

import (
	corev1 "k8s.io/api/core/v1"
)

// The credential record is pgops's own durable copy of the credential PostgreSQL accepts,
// one per database: a Secret that both operators write and the pods boot from. The auth
// Secret (spec.authSecret.name) stays the user's interface, which people, GitOps tools and
// secret operators may change or delete; pgops applies a change of it to PostgreSQL like a
// rotation, and only then writes the record. So:
//   - a pod never starts with a credential PostgreSQL has not accepted (an edit with a
//     trailing newline, a Secret reverted by a GitOps self-heal);
//   - the password PostgreSQL has is never only in a Secret another actor can overwrite;
//   - the record has no owner reference (no garbage collection, no foreground deletion takes
//     it) and a name no Postgres-derived name, KubeDB name or user habit produces (it has a
//     dot, which no name derived from a working Postgres has: a Postgres's name is also its
//     primary Service's, a DNS label);
//   - it is tied to its data: it names the Postgres (UID) it belongs to, and a re-created
//     Postgres of the same name adopts it only when the data it was for is still there.
const (
	// CredentialRecordSuffix follows the database's name in its record's name.
	CredentialRecordSuffix = ".pgops-credential"
	// LabelCredentialRecord marks a credential record; its value is the database's name.
	LabelCredentialRecord = "pgops.dev/credential-record"
	// RecordDatabaseUIDAnnotation is the UID of the Postgres the record belongs to.
	RecordDatabaseUIDAnnotation = "pgops.dev/database-uid"
)

// CredentialRecordName is the name of the credential record of the Postgres called database.
func CredentialRecordName(database string) string { return database + CredentialRecordSuffix }

// IsCredentialRecordOf tells whether sec is the credential record of the Postgres called
// database, by its name and labels: a Secret of that name without them is someone else's.
func IsCredentialRecordOf(sec *corev1.Secret, database string) bool {
	return sec.Name == CredentialRecordName(database) &&
		sec.Labels[LabelCredentialRecord] == database &&
		sec.Labels[LabelName] == NameValue && sec.Labels[LabelInstance] == database &&
		sec.Labels[LabelManagedBy] == ManagedByValue
}

// CredentialRecordLabels are the labels of the credential record of the database.
func CredentialRecordLabels(database string) map[string]string {
	return map[string]string{
		LabelName: NameValue, LabelInstance: database, LabelManagedBy: ManagedByValue,
		LabelCredentialRecord: database,
	}
}

// ReasonAuthSecretOutOfSync is the reason of a Postgres's Ready condition while its auth
// Secret holds another credential than the one PostgreSQL accepts (its record's): clients
// that read the Secret cannot log in, so the phase is NotReady, although the database runs.
// An ops request with apply: IfReady runs on such a database: a rotation is what repairs it.
const ReasonAuthSecretOutOfSync = "AuthSecretOutOfSync"
