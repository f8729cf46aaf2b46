package credential

import (
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// SASLprepResult is the outcome of [SASLprep], mirroring PostgreSQL's
// pg_saslprep_rc.
type SASLprepResult int

const (
	// SASLprepOK: the string was prepared (possibly unchanged).
	SASLprepOK SASLprepResult = iota
	// SASLprepProhibited: the string contains a prohibited or (in Unicode
	// 3.2) unassigned code point, violates the bidi rules, or maps to the
	// empty string.
	SASLprepProhibited
	// SASLprepInvalidUTF8: the string is not valid UTF-8.
	SASLprepInvalidUTF8
)

func (r SASLprepResult) String() string {
	switch r {
	case SASLprepOK:
		return "ok"
	case SASLprepProhibited:
		return "prohibited"
	case SASLprepInvalidUTF8:
		return "invalid UTF-8"
	}
	return "unknown"
}

// SASLprep applies SASLprep (RFC 4013, stringprep RFC 3454) exactly the way
// PostgreSQL's pg_saslprep (src/common/saslprep.c) does, including its
// deviations from a textbook implementation:
//
//   - A pure-ASCII string is returned unchanged without any checks (so ASCII
//     control characters are not rejected).
//   - Non-UTF-8 input yields SASLprepInvalidUTF8.
//   - Mapping: C.1.2 non-ASCII spaces become U+0020 (checked first, so
//     U+200B, which is in both C.1.2 and B.1, becomes a space), B.1
//     characters are removed. If nothing is left, the result is
//     SASLprepProhibited.
//   - The prohibited-output (C.1.2–C.9), unassigned (A.1) and bidi (D.1,
//     D.2) checks are applied to the mapped string *before* NFKC
//     normalisation, as PostgreSQL does.
//   - The result is the NFKC normalisation of the mapped string.
//
// On failure the returned string is empty. To get the bytes PostgreSQL
// actually hashes, use [PreparePassword].
func SASLprep(s string) (string, SASLprepResult) {
	if isASCII(s) {
		return s, SASLprepOK
	}
	if !utf8.ValidString(s) {
		return "", SASLprepInvalidUTF8
	}
	mapped := make([]rune, 0, len(s))
	for _, r := range s {
		switch {
		case inTable(r, nonASCIISpace):
			mapped = append(mapped, ' ')
		case inTable(r, mappedToNothing):
			// dropped
		default:
			mapped = append(mapped, r)
		}
	}
	if len(mapped) == 0 {
		return "", SASLprepProhibited
	}
	hasRandAL := false
	for _, r := range mapped {
		if inTable(r, prohibitedOutput) || inTable(r, unassigned32) {
			return "", SASLprepProhibited
		}
		if inTable(r, randALCat) {
			hasRandAL = true
		}
	}
	if hasRandAL {
		for _, r := range mapped {
			if inTable(r, lCat) {
				return "", SASLprepProhibited
			}
		}
		if !inTable(mapped[0], randALCat) || !inTable(mapped[len(mapped)-1], randALCat) {
			return "", SASLprepProhibited
		}
	}
	return norm.NFKC.String(string(mapped)), SASLprepOK
}

// PreparePassword returns the exact byte string PostgreSQL feeds into
// PBKDF2 for password, both when it builds a verifier on the server
// (scram_build_secret) and when libpq answers a SCRAM challenge: the
// SASLprep result if SASLprep succeeds, otherwise — invalid UTF-8 or a
// prohibited character — the raw password bytes unchanged.
func PreparePassword(password string) string {
	if p, res := SASLprep(password); res == SASLprepOK {
		return p
	}
	return password
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}
