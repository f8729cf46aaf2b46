package credential

import (
	"strings"
	"testing"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// FuzzParseVerifier: whatever ParseVerifier accepts re-encodes to exactly
// the same string, and parsing never panics.
func FuzzParseVerifier(f *testing.F) {
	f.Add("SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=")
	f.Add("SCRAM-SHA-256$1:AA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
	f.Add("md5d41d8cd98f00b204e9800998ecf8427e")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		v, err := ParseVerifier(s)
		if err != nil {
			if strings.HasPrefix(s, scramPrefix) && len(s) > 40 && strings.Contains(err.Error(), s[len(scramPrefix):]) {
				t.Fatalf("error echoes the input")
			}
			return
		}
		if got := v.Encode(); got != s {
			t.Fatalf("round trip changed the verifier:\n in: %q\nout: %q", s, got)
		}
		if v.Iterations < 1 || len(v.Salt) == 0 {
			t.Fatalf("accepted degenerate verifier %q", s)
		}
	})
}

// FuzzVerifierRoundTrip: a verifier built for any acceptable password,
// salt and iteration count encodes, parses back to the same value and
// matches its password (and its SASLprep form), but not a different one.
func FuzzVerifierRoundTrip(f *testing.F) {
	f.Add("pencil", []byte("salt-salt-salt-1"), uint8(3))
	f.Add("a\u00a0b\u00adc", []byte{0, 1, 2}, uint8(0))
	f.Add("pw\U0001F600", []byte{0xff}, uint8(7))
	f.Add("\xff\xfe", []byte("s"), uint8(1))
	f.Fuzz(func(t *testing.T, password string, salt []byte, it uint8) {
		iters := 1 + int(it%8)
		v, err := NewVerifierWithSalt(password, salt, iters)
		if password == "" || strings.IndexByte(password, 0) >= 0 || len(salt) == 0 {
			if err == nil {
				t.Fatalf("accepted invalid input %q / %x", password, salt)
			}
			return
		}
		if err != nil {
			t.Fatalf("NewVerifierWithSalt(%q): %v", password, err)
		}
		s := v.Encode()
		p, err := ParseVerifier(s)
		if err != nil {
			t.Fatalf("cannot parse own verifier %q: %v", s, err)
		}
		if p.Encode() != s || p.Iterations != iters || string(p.Salt) != string(salt) {
			t.Fatalf("round trip mismatch")
		}
		if !p.Matches(password) || !p.Matches(PreparePassword(password)) {
			t.Fatalf("verifier does not match its password %q", password)
		}
		other := password + "x"
		if PreparePassword(other) != PreparePassword(password) && p.Matches(other) {
			t.Fatalf("verifier matches a different password %q", other)
		}
	})
}

// FuzzSASLprep checks the invariants of PostgreSQL's SASLprep: ASCII is
// returned untouched, invalid UTF-8 is reported, a success is valid NFKC
// UTF-8, a failure returns "", and PreparePassword falls back to the input.
func FuzzSASLprep(f *testing.F) {
	for _, s := range []string{"", "user", "I\u00adX", "\u00aa", "\u2168", "a\u00a0b", "\u0627\u0031",
		"\u05d0\u05d1", "\ufb01", "e\u0301", "\xff", "pw\U0001F600", "\u00ad", "\x07"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out, res := SASLprep(s)
		out2, res2 := SASLprep(s)
		if out != out2 || res != res2 {
			t.Fatalf("not deterministic")
		}
		switch {
		case isASCII(s):
			if res != SASLprepOK || out != s {
				t.Fatalf("ASCII %q changed to %q (%v)", s, out, res)
			}
		case !utf8.ValidString(s):
			if res != SASLprepInvalidUTF8 {
				t.Fatalf("invalid UTF-8 %q gave %v", s, res)
			}
		}
		switch res {
		case SASLprepOK:
			if !utf8.ValidString(out) || !norm.NFKC.IsNormalString(out) {
				t.Fatalf("SASLprep(%q) = %q is not valid NFKC UTF-8", s, out)
			}
			if out == "" && s != "" {
				t.Fatalf("SASLprep(%q) succeeded with an empty result", s)
			}
			if PreparePassword(s) != out {
				t.Fatalf("PreparePassword disagrees with SASLprep")
			}
		default:
			if out != "" {
				t.Fatalf("failure %v returned %q", res, out)
			}
			if PreparePassword(s) != s {
				t.Fatalf("PreparePassword does not fall back to the raw input")
			}
		}
		// CheckPassword accepts exactly the inputs PreparePassword keeps.
		if s != "" && strings.IndexByte(s, 0) < 0 {
			if (CheckPassword(s) == nil) != (PreparePassword(s) == s) {
				t.Fatalf("CheckPassword and PreparePassword disagree on %q", s)
			}
		}
	})
}
