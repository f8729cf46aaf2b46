package credential

import (
	"fmt"
	"strings"
)

// connInfoParam is one keyword = value pair of a libpq connection string.
type connInfoParam struct{ key, value string }

// parseConnInfo splits a libpq key/value connection string ("host=a port='5432'") into its
// pairs, in order, with libpq's quoting rules: a value is single-quoted or runs to the next
// white space, and a backslash escapes the next character either way. URIs
// ("postgresql://…") are not accepted.
func parseConnInfo(s string) ([]connInfoParam, error) {
	if strings.HasPrefix(s, "postgresql://") || strings.HasPrefix(s, "postgres://") {
		return nil, fmt.Errorf("a connection URI, not key=value pairs")
	}
	var params []connInfoParam
	isSpace := func(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v' }
	i := 0
	for {
		for i < len(s) && isSpace(s[i]) {
			i++
		}
		if i == len(s) {
			return params, nil
		}
		start := i
		for i < len(s) && s[i] != '=' && !isSpace(s[i]) {
			i++
		}
		key := s[start:i]
		for i < len(s) && isSpace(s[i]) {
			i++
		}
		if key == "" || i == len(s) || s[i] != '=' {
			return nil, fmt.Errorf("missing \"=\" after %q", key)
		}
		i++
		for i < len(s) && isSpace(s[i]) {
			i++
		}
		var value strings.Builder
		if i < len(s) && s[i] == '\'' {
			i++
			for {
				if i == len(s) {
					return nil, fmt.Errorf("unterminated quoted value of %q", key)
				}
				if s[i] == '\\' && i+1 < len(s) {
					value.WriteByte(s[i+1])
					i += 2
					continue
				}
				if s[i] == '\'' {
					i++
					break
				}
				value.WriteByte(s[i])
				i++
			}
		} else {
			for i < len(s) && !isSpace(s[i]) {
				if s[i] == '\\' && i+1 < len(s) {
					i++
				}
				value.WriteByte(s[i])
				i++
			}
		}
		params = append(params, connInfoParam{key: key, value: value.String()})
	}
}

// connInfoValue is the last value of key in params (libpq lets a later one win), and
// whether there is one.
func connInfoValue(params []connInfoParam, key string) (string, bool) {
	value, found := "", false
	for _, p := range params {
		if p.key == key {
			value, found = p.value, true
		}
	}
	return value, found
}
