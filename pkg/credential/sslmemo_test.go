package credential

import (
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// answerSSL plays a server that answers the first 8 bytes it reads with answer.
func answerSSL(t *testing.T, answer byte) (client net.Conn) {
	t.Helper()
	client, server := net.Pipe()
	t.Cleanup(func() { client.Close(); server.Close() })
	go func() {
		buf := make([]byte, 8)
		if _, err := server.Read(buf); err == nil {
			_, _ = server.Write([]byte{answer})
		}
	}()
	return client
}

func TestSSLWatchRecordsARefusalOnly(t *testing.T) {
	for name, tc := range map[string]struct {
		first  []byte
		answer byte
		want   bool
	}{
		"SSL refused":              {sslRequest, 'N', true},
		"SSL accepted":             {sslRequest, 'S', false},
		"no SSL request (disable)": {[]byte{0, 0, 0, 8, 0, 3, 0, 0}, 'N', false},
	} {
		t.Run(name, func(t *testing.T) {
			addr := "192.0.2.1:" + name
			refusedSSL.forget(addr)
			c := &sslWatch{Conn: answerSSL(t, tc.answer), addr: addr}
			_, err := c.Write(tc.first)
			require.NoError(t, err)
			b := make([]byte, 1)
			_, err = c.Read(b)
			require.NoError(t, err)
			assert.Equal(t, tc.want, refusedSSL.recent(addr, time.Now()))
		})
	}
}

func TestSSLRefusalIsForgottenAfterItsTTL(t *testing.T) {
	r := &sslRefusals{at: map[string]time.Time{}}
	t0 := time.Unix(1000, 0)
	r.record("10.0.0.1:5432", t0)
	assert.True(t, r.recent("10.0.0.1:5432", t0.Add(sslRefusalTTL-time.Second)))
	assert.False(t, r.recent("10.0.0.1:5432", t0.Add(sslRefusalTTL)))
	assert.False(t, r.recent("10.0.0.2:5432", t0))

	// Recording another address drops the expired ones: pod addresses come and go.
	r.record("10.0.0.2:5432", t0.Add(2*sslRefusalTTL))
	assert.Len(t, r.at, 1)
}

func TestPreferDialsWithoutSSLWhileTheServerRefusesIt(t *testing.T) {
	tg := Target{Host: "192.0.2.7", Port: 5432, SSLMode: "prefer"}
	refusedSSL.forget(tg.address())
	assert.Contains(t, tg.dsn(), "sslmode='prefer'")
	refusedSSL.record(tg.address(), time.Now())
	assert.Contains(t, tg.dsn(), "sslmode='disable'")
	tg.SSLMode = "require"
	assert.Contains(t, tg.dsn(), "sslmode='require'", "only prefer falls back")
}

// forget drops what r remembers of addr, for tests that run more than once.
func (r *sslRefusals) forget(addr string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.at, addr)
}
