package credential

import (
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// saltReader is the source of salts; tests replace it to get deterministic
// verifiers.
var saltReader io.Reader = rand.Reader

const (
	// ScramIterations is the PBKDF2 iteration count used by NewVerifier,
	// PostgreSQL's default (scram_iterations = 4096).
	ScramIterations = 4096
	// ScramSaltLen is the salt length used by NewVerifier, PostgreSQL's
	// SCRAM_DEFAULT_SALT_LEN.
	ScramSaltLen = 16
	// scramKeyLen is the SHA-256 output size.
	scramKeyLen = sha256.Size

	scramPrefix = "SCRAM-SHA-256$"
	// maxIterations bounds the work Matches can be made to do by a hostile
	// stored verifier; PostgreSQL accepts up to INT_MAX, far more than any
	// sane setting.
	maxIterations = 1 << 24
)

// Verifier is a parsed SCRAM-SHA-256 secret in the form PostgreSQL stores in
// pg_authid.rolpassword:
//
//	SCRAM-SHA-256$<iterations>:<base64 salt>$<base64 StoredKey>:<base64 ServerKey>
//
// Encode re-encodes it. A verifier is not secret in the sense a password
// is, but it allows offline guessing and impersonating the server, so it
// must not be logged either: String, GoString and therefore fmt's %v, %s and
// %#v print only the scheme and iteration count.
type Verifier struct {
	Iterations int
	Salt       []byte
	StoredKey  [scramKeyLen]byte
	ServerKey  [scramKeyLen]byte
}

// NewVerifier builds a verifier for password with a fresh random 16-byte
// salt from crypto/rand and 4096 iterations, exactly as PostgreSQL's
// scram_build_secret would: the password is prepared with
// [PreparePassword] (SASLprep, falling back to the raw bytes when the
// password is not valid UTF-8 or contains prohibited characters).
//
// The password must be non-empty and must not contain NUL (PostgreSQL
// refuses both); otherwise an error wrapping ErrInvalidPassword is returned.
func NewVerifier(password string) (string, error) {
	if err := validatePasswordBasic(password); err != nil {
		return "", err
	}
	salt := make([]byte, ScramSaltLen)
	if _, err := io.ReadFull(saltReader, salt); err != nil {
		return "", fmt.Errorf("credential: reading random salt: %w", err)
	}
	v, err := deriveVerifier(password, salt, ScramIterations)
	if err != nil {
		return "", err
	}
	return v.Encode(), nil
}

// NewVerifierWithSalt is NewVerifier with a caller-chosen salt and iteration
// count. It exists for test vectors and tooling; production code should use
// NewVerifier.
func NewVerifierWithSalt(password string, salt []byte, iterations int) (Verifier, error) {
	if err := validatePasswordBasic(password); err != nil {
		return Verifier{}, err
	}
	if len(salt) == 0 {
		return Verifier{}, fmt.Errorf("%w: empty salt", ErrInvalidVerifier)
	}
	if iterations < 1 || iterations > maxIterations {
		return Verifier{}, fmt.Errorf("%w: iteration count out of range", ErrInvalidVerifier)
	}
	return deriveVerifier(password, salt, iterations)
}

func deriveVerifier(password string, salt []byte, iterations int) (Verifier, error) {
	stored, server, err := scramKeys(PreparePassword(password), salt, iterations)
	if err != nil {
		return Verifier{}, err
	}
	v := Verifier{Iterations: iterations, Salt: append([]byte(nil), salt...)}
	v.StoredKey, v.ServerKey = stored, server
	return v, nil
}

// scramKeys computes StoredKey and ServerKey (RFC 5802 section 3) for an
// already prepared password.
func scramKeys(prepared string, salt []byte, iterations int) (stored, server [scramKeyLen]byte, err error) {
	// Hi(password, salt, i) is PBKDF2 with HMAC-SHA-256 and dkLen = 32.
	salted, err := pbkdf2.Key(sha256.New, prepared, salt, iterations, scramKeyLen)
	if err != nil {
		return stored, server, fmt.Errorf("credential: deriving salted password: %w", err)
	}
	clientKey := hmacSHA256(salted, "Client Key")
	stored = sha256.Sum256(clientKey)
	copy(server[:], hmacSHA256(salted, "Server Key"))
	clear(salted)
	clear(clientKey)
	return stored, server, nil
}

func hmacSHA256(key []byte, msg string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(msg))
	return m.Sum(nil)
}

// Encode returns v in PostgreSQL's storage format.
func (v Verifier) Encode() string {
	enc := base64.StdEncoding
	var b strings.Builder
	b.Grow(len(scramPrefix) + 10 + enc.EncodedLen(len(v.Salt)) + 2*enc.EncodedLen(scramKeyLen) + 3)
	b.WriteString(scramPrefix)
	b.WriteString(strconv.Itoa(v.Iterations))
	b.WriteByte(':')
	b.WriteString(enc.EncodeToString(v.Salt))
	b.WriteByte('$')
	b.WriteString(enc.EncodeToString(v.StoredKey[:]))
	b.WriteByte(':')
	b.WriteString(enc.EncodeToString(v.ServerKey[:]))
	return b.String()
}

// String describes v without its salt and keys.
func (v Verifier) String() string {
	return scramPrefix + strconv.Itoa(v.Iterations) + ":" + redacted
}

// GoString keeps %#v from printing key material.
func (v Verifier) GoString() string { return "credential.Verifier{" + v.String() + "}" }

// ParseVerifier parses a stored SCRAM-SHA-256 verifier. It is strict: the
// iteration count must be a canonical positive decimal number, the salt and
// both keys must be canonical padded standard base64, and each key must be 32
// bytes. Errors wrap ErrInvalidVerifier and never echo the input.
func ParseVerifier(s string) (Verifier, error) {
	bad := func(what string) (Verifier, error) {
		return Verifier{}, fmt.Errorf("%w: %s", ErrInvalidVerifier, what)
	}
	rest, ok := strings.CutPrefix(s, scramPrefix)
	if !ok {
		return bad("missing SCRAM-SHA-256$ prefix")
	}
	params, keys, ok := strings.Cut(rest, "$")
	if !ok {
		return bad("missing '$' before keys")
	}
	iterStr, saltStr, ok := strings.Cut(params, ":")
	if !ok {
		return bad("missing ':' between iterations and salt")
	}
	storedStr, serverStr, ok := strings.Cut(keys, ":")
	if !ok {
		return bad("missing ':' between keys")
	}
	if iterStr == "" || len(iterStr) > 10 || iterStr[0] == '0' {
		return bad("malformed iteration count")
	}
	for i := 0; i < len(iterStr); i++ {
		if iterStr[i] < '0' || iterStr[i] > '9' {
			return bad("malformed iteration count")
		}
	}
	iters, err := strconv.Atoi(iterStr)
	if err != nil || iters < 1 || iters > maxIterations {
		return bad("iteration count out of range")
	}
	salt, err := decodeB64(saltStr)
	if err != nil || len(salt) == 0 {
		return bad("malformed salt")
	}
	v := Verifier{Iterations: iters, Salt: salt}
	stored, err := decodeB64(storedStr)
	if err != nil || len(stored) != scramKeyLen {
		return bad("malformed StoredKey")
	}
	server, err := decodeB64(serverStr)
	if err != nil || len(server) != scramKeyLen {
		return bad("malformed ServerKey")
	}
	copy(v.StoredKey[:], stored)
	copy(v.ServerKey[:], server)
	return v, nil
}

// decodeB64 decodes canonical padded standard base64 (it rejects
// non-canonical trailing bits and embedded newlines, so that a parsed
// verifier always re-encodes to the same string).
func decodeB64(s string) ([]byte, error) {
	b, err := base64.StdEncoding.Strict().DecodeString(s)
	if err != nil {
		return nil, err
	}
	if strings.ContainsAny(s, "\r\n") {
		return nil, fmt.Errorf("newline in base64")
	}
	return b, nil
}

// Matches reports whether password matches v, the way PostgreSQL's
// scram_verify_plain_password decides it: the password is prepared with
// [PreparePassword], StoredKey and ServerKey are re-derived from v's salt
// and iteration count, and both are compared in constant time.
func (v Verifier) Matches(password string) bool {
	if password == "" || len(v.Salt) == 0 || v.Iterations < 1 || v.Iterations > maxIterations {
		return false
	}
	stored, server, err := scramKeys(PreparePassword(password), v.Salt, v.Iterations)
	if err != nil {
		return false
	}
	okStored := subtle.ConstantTimeCompare(stored[:], v.StoredKey[:])
	okServer := subtle.ConstantTimeCompare(server[:], v.ServerKey[:])
	return okStored&okServer == 1
}
