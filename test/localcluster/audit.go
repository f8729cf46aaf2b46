package localcluster

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The API server writes an audit log of every request the pgops operators make except
// watches (their ServiceAccounts live in namespace pgops-system), and of nothing else: the
// benchmarks count the operators' API writes per rotation by resource from it.
const (
	auditPolicyFile = "audit-policy.yaml"
	auditLogFile    = "audit.log"
	// OperatorsGroup is the group of the operators' ServiceAccounts.
	OperatorsGroup = "system:serviceaccounts:pgops-system"
)

const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: Metadata
  userGroups: ["` + OperatorsGroup + `"]
  verbs: ["get", "list", "create", "update", "patch", "delete", "deletecollection"]
- level: None
`

func (c *Cluster) writeAuditPolicy() error {
	return os.WriteFile(c.path(auditPolicyFile), []byte(auditPolicy), 0o600)
}

func (c *Cluster) auditFlags() []string {
	return []string{
		"--audit-policy-file=" + c.path(auditPolicyFile),
		"--audit-log-path=" + c.AuditLogPath(),
		"--audit-log-format=json",
		// Written before the response, so a request the caller saw answered is in the log.
		"--audit-log-mode=blocking",
	}
}

// AuditLogPath is the API server's audit log of the operators' requests.
func (c *Cluster) AuditLogPath() string { return c.path("logs", auditLogFile) }

// AuditEvent is the part of an audit event the benchmarks read.
type AuditEvent struct {
	Verb string `json:"verb"`
	User struct {
		Username string `json:"username"`
	} `json:"user"`
	ObjectRef struct {
		Resource    string `json:"resource"`
		Subresource string `json:"subresource"`
		Namespace   string `json:"namespace"`
		Name        string `json:"name"`
	} `json:"objectRef"`
	ResponseStatus struct {
		Code int `json:"code"`
	} `json:"responseStatus"`
	// StageTimestamp is when the API server answered.
	StageTimestamp metav1.MicroTime `json:"stageTimestamp"`
}

// Write tells whether the event changed something (or tried to).
func (e AuditEvent) Write() bool {
	switch e.Verb {
	case "create", "update", "patch", "delete", "deletecollection":
		return true
	}
	return false
}

// Operator is the operator's ServiceAccount name ("pgops-ops-manager"), or "".
func (e AuditEvent) Operator() string {
	const prefix = "system:serviceaccount:pgops-system:"
	if !strings.HasPrefix(e.User.Username, prefix) {
		return ""
	}
	return strings.TrimPrefix(e.User.Username, prefix)
}

// Resource is "resource" or "resource/subresource".
func (e AuditEvent) Resource() string {
	if e.ObjectRef.Subresource == "" {
		return e.ObjectRef.Resource
	}
	return e.ObjectRef.Resource + "/" + e.ObjectRef.Subresource
}

// ReadAuditLog returns the events written to the audit log at path from byte offset on, and
// the offset after them.
func ReadAuditLog(path string, offset int64) ([]AuditEvent, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, offset, err
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return nil, offset, err
	}
	var events []AuditEvent
	r := bufio.NewReaderSize(f, 1<<16)
	for {
		line, err := r.ReadBytes('\n')
		if err == io.EOF {
			return events, offset, nil // a partial last line is read next time
		}
		if err != nil {
			return events, offset, err
		}
		offset += int64(len(line))
		var e AuditEvent
		if err := json.Unmarshal(line, &e); err != nil {
			return events, offset, fmt.Errorf("audit log %s: %w", path, err)
		}
		events = append(events, e)
	}
}
