package credential

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseConnInfoFollowsLibpqQuoting(t *testing.T) {
	params, err := parseConnInfo(`host=10.0.0.1  port = '5432' user='o\'neil' passfile='/var/pv/.pgpass' password=a\ b\\c application_name='db-1'`)
	require.NoError(t, err)
	assert.Equal(t, []connInfoParam{
		{"host", "10.0.0.1"}, {"port", "5432"}, {"user", "o'neil"}, {"passfile", "/var/pv/.pgpass"},
		{"password", `a b\c`}, {"application_name", "db-1"},
	}, params)
}

func TestParseConnInfoRefusesWhatItCannotRead(t *testing.T) {
	for _, bad := range []string{"postgresql://u@h/db", "host", "host=", "host='unterminated", "=x"} {
		_, err := parseConnInfo(bad)
		if bad == "host=" {
			require.NoError(t, err, "an empty value is legal")
			continue
		}
		assert.Error(t, err, "%q", bad)
	}
}

func TestConnInfoValueTakesTheLastOne(t *testing.T) {
	params := []connInfoParam{{"host", "h"}, {"passfile", "/a"}, {"passfile", "/b"}}
	v, ok := connInfoValue(params, "passfile")
	assert.True(t, ok)
	assert.Equal(t, "/b", v)
	_, ok = connInfoValue(params, "password")
	assert.False(t, ok)
}

func TestPassfileLineEscapesSeparators(t *testing.T) {
	assert.Equal(t, `*:*:*:o\:neil:p\\a\:ss'w d`, PassfileLine("o:neil", `p\a:ss'w d`))
}
