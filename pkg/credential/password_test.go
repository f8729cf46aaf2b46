package credential

import (
	"bytes"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestGeneratePassword(t *testing.T) {
	seen := map[string]bool{}
	for _, n := range []int{MinPasswordLength, DefaultPasswordLength, 17, 64, MaxPasswordLength} {
		for i := 0; i < 50; i++ {
			p, err := GeneratePassword(n)
			require.NoError(t, err)
			require.Len(t, p, n)
			assert.True(t, strings.ContainsAny(p, lowerChars), "no lowercase in %q", p)
			assert.True(t, strings.ContainsAny(p, upperChars), "no uppercase in %q", p)
			assert.True(t, strings.ContainsAny(p, digitChars), "no digit in %q", p)
			for _, c := range p {
				assert.True(t, strings.ContainsRune(passwordChars, c), "unexpected %q", c)
			}
			assert.NoError(t, CheckPassword(p))
			assert.False(t, seen[p], "duplicate password")
			seen[p] = true
		}
	}
}

func TestGeneratePasswordRejectsLength(t *testing.T) {
	for _, n := range []int{-1, 0, 1, MinPasswordLength - 1, MaxPasswordLength + 1} {
		_, err := GeneratePassword(n)
		assert.Error(t, err, "length %d", n)
	}
}

// TestGeneratePasswordRejectionSampling feeds a scripted byte stream: bytes
// >= 248 must be skipped (not reduced modulo 62), and a candidate lacking a
// character class must be discarded whole.
func TestGeneratePasswordRejectionSampling(t *testing.T) {
	idx := func(c byte) byte { return byte(strings.IndexByte(passwordChars, c)) }
	var stream []byte
	// First candidate: "aaaaaaaa" (no upper, no digit) -> discarded. Bytes
	// 248..255 interleaved must be skipped.
	for i := 0; i < 8; i++ {
		stream = append(stream, 248+byte(i), idx('a'))
	}
	// Second candidate: "aB3aB3aB" using values offset by 62 and 124 to
	// show they map by modulo within the unbiased range.
	want := "aB3aB3aB"
	for i := 0; i < len(want); i++ {
		stream = append(stream, idx(want[i])+62*byte(i%4))
	}
	stream = append(stream, bytes.Repeat([]byte{0}, 64)...)
	p, err := generatePassword(bytes.NewReader(stream), 8)
	require.NoError(t, err)
	assert.Equal(t, want, p)
}

// TestGeneratePasswordDistribution is a loose sanity check that every
// symbol occurs with roughly equal frequency (a modulo bias would give the
// first 8 symbols 5/4 of the others' weight).
func TestGeneratePasswordDistribution(t *testing.T) {
	counts := map[rune]int{}
	total := 0
	for i := 0; i < 2000; i++ {
		p, err := GeneratePassword(32)
		require.NoError(t, err)
		for _, c := range p {
			counts[c]++
			total++
		}
	}
	require.Len(t, counts, len(passwordChars))
	exp := float64(total) / float64(len(passwordChars))
	chi := 0.0
	for _, n := range counts {
		d := float64(n) - exp
		chi += d * d / exp
	}
	// 61 degrees of freedom: p(chi2 > 130) < 1e-6. The class requirement
	// skews the distribution only marginally at length 32.
	assert.Less(t, chi, 130.0, "chi-square %.1f", chi)
}

func TestValidateRoleName(t *testing.T) {
	ok := []string{"app", "App User", `we"ird`, `back\slash`, "dollar$", "x'; DROP ROLE postgres; --",
		"\u00fcn\u00efc\u00f8d\u00e9", strings.Repeat("r", 63), strings.Repeat("\u00e9", 31) + "x"}
	for _, r := range ok {
		assert.NoError(t, ValidateRoleName(r), "%q", r)
	}
	bad := []string{"", strings.Repeat("r", 64), strings.Repeat("\u00e9", 32), "a\x00b", "\xff"}
	for _, r := range bad {
		assert.ErrorIs(t, ValidateRoleName(r), ErrInvalidRole, "%q", r)
	}
}

func BenchmarkGeneratePassword(b *testing.B) {
	for b.Loop() {
		if _, err := GeneratePassword(DefaultPasswordLength); err != nil {
			b.Fatal(err)
		}
	}
}
