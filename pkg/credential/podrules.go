package credential

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// The rules for a credential that pgops puts into database pods. A pod receives the
// credential in its environment (POSTGRES_USER, POSTGRES_PASSWORD), initdb reads it from a
// file, and standbys write it into a passfile, one line per entry: a value that is legal in
// a Secret can still break any of these after PostgreSQL has accepted it (a trailing newline
// from `kubectl create secret --from-file` cannot be carried by a passfile; a 140 kB value
// makes execve fail with E2BIG). Both operators check these rules before anything is
// changed: the provisioner before it creates pods, the ops-manager before it pauses the
// database.
const (
	// MinPodPasswordLength is the shortest password accepted, in bytes. KubeDB and pgops
	// generate 16 characters.
	MinPodPasswordLength = 8
	// MaxPodPasswordLength is the longest password accepted, in bytes: far below the
	// kernel's 128 kB limit on one environment string.
	MaxPodPasswordLength = 1024
)

// ValidatePodPassword checks a password against the pod rules and against what SetPassword
// accepts ([CheckPassword]). The error names the broken rule and never holds the password.
// Errors wrap ErrInvalidPassword.
func ValidatePodPassword(password string) error {
	if err := checkPodValue(password, "password"); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidPassword, err)
	}
	if n := len(password); n < MinPodPasswordLength || n > MaxPodPasswordLength {
		return fmt.Errorf("%w: it is %d bytes long; the password must be %d to %d bytes long",
			ErrInvalidPassword, n, MinPodPasswordLength, MaxPodPasswordLength)
	}
	return CheckPassword(password)
}

// ValidatePodUsername checks a superuser name against the pod rules and PostgreSQL's own
// ([ValidateRoleName]; names starting with "pg_" are reserved, and initdb refuses them).
// Errors wrap ErrInvalidRole.
func ValidatePodUsername(username string) error {
	if err := ValidateRoleName(username); err != nil {
		return err
	}
	if err := checkPodValue(username, "username"); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidRole, err)
	}
	if strings.HasPrefix(username, "pg_") {
		return fmt.Errorf("%w: names starting with \"pg_\" are reserved by PostgreSQL", ErrInvalidRole)
	}
	return nil
}

// checkPodValue: valid UTF-8, printable, no surrounding whitespace.
func checkPodValue(v, what string) error {
	if !utf8.ValidString(v) {
		return fmt.Errorf("the %s is not valid UTF-8", what)
	}
	for i, r := range v {
		if unicode.IsControl(r) || !unicode.IsGraphic(r) {
			return fmt.Errorf("the %s contains a control or non-printable character (U+%04X at byte %d)", what, r, i)
		}
	}
	if trimmed := strings.TrimSpace(v); trimmed != v {
		return fmt.Errorf("the %s begins or ends with whitespace (a file read with --from-file often ends with a newline)", what)
	}
	return nil
}
