package credential

import (
	"crypto/rand"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

const (
	// DefaultPasswordLength is the length GeneratePassword callers should
	// use unless they have a reason not to: 16 characters from a 62-symbol
	// alphabet, about 95 bits of entropy.
	DefaultPasswordLength = 16
	// MinPasswordLength is the shortest password GeneratePassword makes.
	MinPasswordLength = 8
	// MaxPasswordLength is the longest password GeneratePassword makes.
	MaxPasswordLength = 1024

	// MaxRoleNameLength is PostgreSQL's NAMEDATALEN-1: longer identifiers
	// are silently truncated by the server, so they are refused here.
	MaxRoleNameLength = 63

	lowerChars    = "abcdefghijklmnopqrstuvwxyz"
	upperChars    = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
	digitChars    = "0123456789"
	passwordChars = lowerChars + upperChars + digitChars
)

// GeneratePassword returns a random password of the given length made of
// ASCII letters and digits, containing at least one lowercase letter, one
// uppercase letter and one digit. Each character is drawn uniformly from the
// 62-symbol alphabet with crypto/rand using rejection sampling (no modulo
// bias); candidates lacking a required class are discarded and redrawn, so
// the result is uniform over all valid passwords of that length. Such a
// password is invariant under SASLprep and needs no quoting anywhere.
//
// length must be between MinPasswordLength and MaxPasswordLength.
func GeneratePassword(length int) (string, error) {
	return generatePassword(rand.Reader, length)
}

func generatePassword(r io.Reader, length int) (string, error) {
	if length < MinPasswordLength || length > MaxPasswordLength {
		return "", fmt.Errorf("credential: password length %d out of range [%d, %d]",
			length, MinPasswordLength, MaxPasswordLength)
	}
	const n = len(passwordChars)  // 62
	const limit = 256 - (256 % n) // 248: largest multiple of 62 that fits a byte
	out := make([]byte, length)
	buf := make([]byte, 2*length)
	for attempt := 0; attempt < 1000; attempt++ {
		filled := 0
		for filled < length {
			if _, err := io.ReadFull(r, buf); err != nil {
				return "", fmt.Errorf("credential: reading randomness: %w", err)
			}
			for _, b := range buf {
				if int(b) >= limit {
					continue // reject: would bias toward the first 256%62 symbols
				}
				out[filled] = passwordChars[int(b)%n]
				filled++
				if filled == length {
					break
				}
			}
		}
		if hasEachClass(out) {
			return string(out), nil
		}
	}
	// With length >= 8 the chance of 1000 consecutive rejections is far
	// below 1e-300; reaching this means the random source is broken.
	return "", fmt.Errorf("credential: random source produced no acceptable password")
}

func hasEachClass(p []byte) bool {
	var lower, upper, digit bool
	for _, c := range p {
		switch {
		case 'a' <= c && c <= 'z':
			lower = true
		case 'A' <= c && c <= 'Z':
			upper = true
		case '0' <= c && c <= '9':
			digit = true
		}
	}
	return lower && upper && digit
}

// ValidateRoleName checks a role name before it is sent anywhere: it must be
// non-empty, at most 63 bytes (PostgreSQL would silently truncate a longer
// quoted identifier and act on a different role), valid UTF-8 and free of
// NUL. Any other character, including quotes, spaces and uppercase letters,
// is fine: names are always sent as quoted identifiers. Errors wrap
// ErrInvalidRole.
func ValidateRoleName(role string) error {
	switch {
	case role == "":
		return fmt.Errorf("credential: %w: empty", ErrInvalidRole)
	case len(role) > MaxRoleNameLength:
		return fmt.Errorf("credential: %w: %d bytes, the maximum is %d", ErrInvalidRole, len(role), MaxRoleNameLength)
	case strings.IndexByte(role, 0) >= 0:
		return fmt.Errorf("credential: %w: contains NUL", ErrInvalidRole)
	case !utf8.ValidString(role):
		return fmt.Errorf("credential: %w: not valid UTF-8", ErrInvalidRole)
	}
	return nil
}

// validatePasswordBasic is what PostgreSQL itself requires of a password.
func validatePasswordBasic(password string) error {
	switch {
	case password == "":
		return fmt.Errorf("credential: %w: empty", ErrInvalidPassword)
	case strings.IndexByte(password, 0) >= 0:
		return fmt.Errorf("credential: %w: contains NUL", ErrInvalidPassword)
	}
	return nil
}

// CheckPassword reports whether SetPassword accepts password. Besides being
// non-empty and free of NUL, the password must be unchanged by
// [PreparePassword], i.e. already in SASLprep-normalised form.
//
// Why: PostgreSQL hashes the SASLprep form of a password, and libpq-based
// clients (psql, most drivers built on libpq) normalise the password the
// same way before answering the SCRAM challenge, but other clients —
// including github.com/lib/pq, which this operator uses, and several other
// native drivers — send the raw bytes. For a password such as "a\u00a0b"
// (no-break space, mapped to a plain space) or "a\u00adb" (soft hyphen,
// mapped to nothing) or one not in NFKC form, the same plaintext would work
// for some clients and fail for others. Such passwords are refused (error
// wrapping ErrPasswordNotNormalized and ErrInvalidPassword) before any
// server is contacted; pass the output of [PreparePassword] instead if that
// is what is meant.
//
// Passwords that SASLprep rejects (prohibited or, in Unicode 3.2,
// unassigned characters such as emoji, bidi violations) and passwords that
// are not valid UTF-8 are accepted: PostgreSQL and libpq both fall back to
// the raw bytes for them, as does lib/pq, so every client agrees.
func CheckPassword(password string) error {
	if err := validatePasswordBasic(password); err != nil {
		return err
	}
	if PreparePassword(password) != password {
		return fmt.Errorf("credential: %w: %w (non-ASCII spaces, soft hyphens, zero-width or other ignorable characters, or characters not in NFKC form); clients disagree on such passwords",
			ErrInvalidPassword, ErrPasswordNotNormalized)
	}
	return nil
}
