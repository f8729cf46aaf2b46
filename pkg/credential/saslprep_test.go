package credential

import (
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"golang.org/x/text/unicode/norm"
)

func TestSASLprepTablesWellFormed(t *testing.T) {
	tables := map[string][]runeRange{
		"nonASCIISpace": nonASCIISpace, "mappedToNothing": mappedToNothing,
		"prohibitedOutput": prohibitedOutput, "unassigned32": unassigned32,
		"randALCat": randALCat, "lCat": lCat,
	}
	for name, tab := range tables {
		for i, r := range tab {
			if r.lo > r.hi || r.hi > utf8.MaxRune {
				t.Errorf("%s[%d] = %X-%X is not a valid range", name, i, r.lo, r.hi)
			}
			if i > 0 && tab[i-1].hi >= r.lo {
				t.Errorf("%s[%d] = %X-%X overlaps or is out of order after %X-%X", name, i, r.lo, r.hi, tab[i-1].lo, tab[i-1].hi)
			}
		}
	}
	// D.1 and D.2 are disjoint, and neither overlaps the A.1 unassigned table.
	for _, a := range []struct {
		name string
		tab  []runeRange
	}{{"randALCat", randALCat}, {"lCat", lCat}} {
		for _, r := range a.tab {
			for c := r.lo; c <= r.hi; c++ {
				if inTable(c, unassigned32) {
					t.Fatalf("%s contains %U, which A.1 lists as unassigned", a.name, c)
				}
				if a.name == "randALCat" && inTable(c, lCat) {
					t.Fatalf("%U is in both D.1 and D.2", c)
				}
			}
		}
	}
}

func TestSASLprep(t *testing.T) {
	ok, prohibited, invalid := SASLprepOK, SASLprepProhibited, SASLprepInvalidUTF8
	cases := []struct {
		name, in, out string
		res           SASLprepResult
	}{
		// RFC 4013 section 3 examples, as PostgreSQL treats them.
		{"RFC soft hyphen", "I\u00adX", "IX", ok},
		{"RFC no transformation", "user", "user", ok},
		{"RFC case preserved", "USER", "USER", ok},
		{"RFC ordinal indicator", "\u00aa", "a", ok},
		{"RFC roman numeral nine", "\u2168", "IX", ok},
		// RFC 4013 says U+0007 is prohibited, but PostgreSQL returns pure
		// ASCII unchanged without checks.
		{"ASCII control passes (PostgreSQL fast path)", "\u0007", "\u0007", ok},
		{"RFC bidi violation", "\u0627\u0031", "", prohibited},

		{"ASCII unchanged", `p@ss w'o"rd\$`, `p@ss w'o"rd\$`, ok},
		{"no-break space mapped to space", "a\u00a0b", "a b", ok},
		{"ideographic space", "a\u3000b", "a b", ok},
		{"zero-width space is C.1.2 first: space", "a\u200bb", "a b", ok},
		{"zero-width joiner removed", "a\u200db\u00e9", "ab\u00e9", ok},
		{"variation selector removed", "x\ufe0fy\u00e9", "xy\u00e9", ok},
		{"only mapped-to-nothing: prohibited (empty)", "\u00ad\u200d", "", prohibited},
		{"NFKC ligature", "\ufb01x", "fix", ok},
		{"NFKC full-width", "\uff21\uff22", "AB", ok},
		{"NFKC composes", "e\u0301", "\u00e9", ok},
		{"NFKC angstrom sign", "\u212b", "\u00c5", ok},
		{"precomposed unchanged", "\u00fcn\u00efc\u00f8d\u00e9", "\u00fcn\u00efc\u00f8d\u00e9", ok},
		{"CJK unchanged", "\u65e5\u672c\u8a9e", "\u65e5\u672c\u8a9e", ok},
		{"private use prohibited", "a\ue000b", "", prohibited},
		{"emoji unassigned in Unicode 3.2", "pw\U0001f600", "", prohibited},
		{"U+0221 unassigned in 3.2", "\u0221", "", prohibited},
		{"non-ASCII control prohibited", "\u00e9\u0085", "", prohibited},
		{"ASCII control in non-ASCII string prohibited", "\u00e9\u0007", "", prohibited},
		{"line separator prohibited", "a\u2028\u00e9", "", prohibited},
		{"tag character prohibited", "a\U000e0041\u00e9", "", prohibited},
		{"noncharacter prohibited", "a\ufdd0", "", prohibited},
		{"RandAL only", "\u05d0\u05d1", "\u05d0\u05d1", ok},
		{"RandAL with L", "\u05d0a\u05d1", "", prohibited},
		{"RandAL not last", "\u05d01", "", prohibited},
		{"RandAL first and last, digit inside", "\u05d01\u05d1", "\u05d01\u05d1", ok},
		{"invalid UTF-8", "\xff\xfepw", "", invalid},
		{"truncated UTF-8", "\xc3", "", invalid},
		{"surrogate encoded in UTF-8", "\xed\xa0\x80", "", invalid},
		{"overlong encoding", "\xc0\xaf", "", invalid},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, res := SASLprep(c.in)
			assert.Equal(t, c.res, res)
			assert.Equal(t, c.out, out)
			want := c.out
			if res != SASLprepOK {
				want = c.in
			}
			assert.Equal(t, want, PreparePassword(c.in))
		})
	}
}

// TestSASLprepChecksBeforeNormalising pins PostgreSQL's order: the
// prohibited/unassigned checks look at the mapped input, not at the NFKC
// output.
func TestSASLprepChecksBeforeNormalising(t *testing.T) {
	// U+2474 PARENTHESIZED DIGIT ONE is assigned in 3.2 and not prohibited;
	// its NFKC form "(1)" is plain ASCII.
	out, res := SASLprep("\u2474")
	assert.Equal(t, SASLprepOK, res)
	assert.Equal(t, "(1)", out)
	assert.True(t, norm.NFKC.IsNormalString(out))
}

func TestCheckPassword(t *testing.T) {
	for _, p := range []string{"simple", `qu'o"te\ $x`, "\u00fcber", "pw\U0001f600", "\xff\xfe", "\x07bell", "\u05d0a"} {
		assert.NoError(t, CheckPassword(p), "%q", p)
	}
	for _, p := range []string{"a\u00a0b", "soft\u00adhyphen", "\ufb01", "e\u0301"} {
		err := CheckPassword(p)
		assert.ErrorIs(t, err, ErrPasswordNotNormalized, "%q", p)
		assert.ErrorIs(t, err, ErrInvalidPassword, "%q", p)
	}
	assert.ErrorIs(t, CheckPassword(""), ErrInvalidPassword)
	assert.ErrorIs(t, CheckPassword("a\x00"), ErrInvalidPassword)
}

func BenchmarkSASLprep(b *testing.B) {
	for b.Loop() {
		SASLprep("p\u00e4ssw\u00f6rd\u00a0with\u00adstuff\ufb01")
	}
}
