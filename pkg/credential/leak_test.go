package credential

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestNoConnectionLeftOpenWhenTheServerClosesDuringSSLNegotiation: a server (or a proxy
// without endpoints) that closes a connection at once makes lib/pq's sslmode=prefer dial
// again without SSL, and lib/pq leaves the first socket open. Every connection an
// operation dials is closed by the time it returns.
func TestNoConnectionLeftOpenWhenTheServerClosesDuringSSLNegotiation(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()

	var mu sync.Mutex
	var accepted int
	closedByClient := make(chan bool, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			accepted++
			mu.Unlock()
			go func(c net.Conn) {
				defer c.Close()
				// Read the first packet's length and code, answer nothing, and half-close:
				// the client sees the server end the connection.
				_, _ = io.ReadFull(c, make([]byte, 8))
				_ = c.(*net.TCPConn).CloseWrite()
				// The client's close shows as EOF; a leaked socket never sends it.
				_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
				_, err := io.Copy(io.Discard, c)
				closedByClient <- err == nil
			}(c)
		}
	}()

	port := ln.Addr().(*net.TCPAddr).Port
	target := Target{Host: "127.0.0.1", Port: port, SSLMode: "prefer", ConnectTimeout: 5 * time.Second}
	ok, err := VerifyLogin(context.Background(), target, "postgres", "secret")
	require.Error(t, err)
	assert.False(t, ok)
	assert.True(t, errors.Is(err, ErrUnreachable) || Classify(err) == ClassUnreachable, "%v", err)

	mu.Lock()
	n := accepted
	mu.Unlock()
	require.GreaterOrEqual(t, n, 2, "lib/pq tried with SSL, then without")
	for i := 0; i < n; i++ {
		assert.True(t, <-closedByClient, "connection %d was left open", i)
	}
}
