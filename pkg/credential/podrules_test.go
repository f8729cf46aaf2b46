package credential

import (
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestValidatePodPasswordNamesTheRule(t *testing.T) {
	for name, tc := range map[string]struct {
		password string
		rule     string
	}{
		"trailing newline from --from-file": {"Secret-Password-1\n", "control"},
		"trailing space":                    {"Secret-Password-1 ", "whitespace"},
		"leading tab":                       {"\tSecret-Password-1", "control"},
		"control character inside":          {"Secret\x07Password", "control"},
		"DEL":                               {"Secret\x7fPassword", "control"},
		"zero-width space":                  {"Secret\u200bPassword", "non-printable"},
		"one byte":                          {"x", "8 to 1024 bytes"},
		"seven bytes":                       {"abcdefg", "8 to 1024 bytes"},
		"200 kB":                            {strings.Repeat("a", 200<<10), "8 to 1024 bytes"},
		"not UTF-8":                         {"Secret\xffPassword", "UTF-8"},
		"NUL":                               {"Secret\x00Password", "control"},
	} {
		t.Run(name, func(t *testing.T) {
			err := ValidatePodPassword(tc.password)
			require.Error(t, err)
			assert.True(t, errors.Is(err, ErrInvalidPassword), err)
			assert.Contains(t, err.Error(), tc.rule)
			if len(tc.password) > 3 {
				assert.NotContains(t, err.Error(), strings.TrimSpace(tc.password), "the error never holds the password")
			}
		})
	}
}

func TestValidatePodPasswordAccepts(t *testing.T) {
	for _, p := range []string{
		"abcdefgh", "Inner spaces are fine", `quote'back\slash:colon"`, "pässwörd-ünicode", strings.Repeat("a", 1024),
	} {
		assert.NoError(t, ValidatePodPassword(p), "%q", p)
	}
	generated, err := GeneratePassword(DefaultPasswordLength)
	require.NoError(t, err)
	assert.NoError(t, ValidatePodPassword(generated))
}

func TestValidatePodUsername(t *testing.T) {
	for _, ok := range []string{"postgres", "Admin User", "o'brien"} {
		assert.NoError(t, ValidatePodUsername(ok), ok)
	}
	for bad, rule := range map[string]string{
		"":                      "empty",
		"postgres\n":            "control",
		" postgres":             "whitespace",
		"pg_admin":              "reserved",
		strings.Repeat("u", 64): "maximum",
	} {
		err := ValidatePodUsername(bad)
		require.Error(t, err, "%q", bad)
		assert.True(t, errors.Is(err, ErrInvalidRole), err)
		assert.Contains(t, err.Error(), rule)
	}
}
