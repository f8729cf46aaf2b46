package credential

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// sslRequestCode opens an SSLRequest packet, after its length.
const sslRequestCode = 80877103

// leakServer accepts connections and, for each, reads the first packet's length and code;
// an SSLRequest is answered "N" (no TLS) when answerNo, and then the server reads on;
// anything else is answered by a half-close, as a server or proxy that gives up at once.
// It reports per connection whether the client closed it within 10 s.
type leakServer struct {
	ln             net.Listener
	mu             sync.Mutex
	accepted       int
	closedByClient chan bool
}

func startLeakServer(t *testing.T, answerNo bool) *leakServer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	s := &leakServer{ln: ln, closedByClient: make(chan bool, 16)}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.accepted++
			s.mu.Unlock()
			go func(c net.Conn) {
				defer c.Close()
				head := make([]byte, 8)
				if _, err := io.ReadFull(c, head); err == nil && answerNo && binary.BigEndian.Uint32(head[4:]) == sslRequestCode {
					_, _ = c.Write([]byte("N"))
				} else {
					_ = c.(*net.TCPConn).CloseWrite()
				}
				// The client's close shows as EOF; a leaked socket never sends it.
				_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
				_, err := io.Copy(io.Discard, c)
				s.closedByClient <- err == nil
			}(c)
		}
	}()
	return s
}

// checkAllClosed waits for every connection's report.
func (s *leakServer) checkAllClosed(t *testing.T) {
	t.Helper()
	s.mu.Lock()
	n := s.accepted
	s.mu.Unlock()
	require.GreaterOrEqual(t, n, 2, "lib/pq tried with SSL, then without")
	for i := 0; i < n; i++ {
		assert.True(t, <-s.closedByClient, "a connection was left open")
	}
}

// Every connection an operation dials is closed by the time it returns: lib/pq's
// sslmode=prefer dials again without SSL when the SSL negotiation fails and leaves the
// first socket open.
func TestNoConnectionLeftOpenWhenTheServerClosesDuringSSLNegotiation(t *testing.T) {
	s := startLeakServer(t, false)
	target := Target{Host: "127.0.0.1", Port: s.ln.Addr().(*net.TCPAddr).Port, SSLMode: "prefer", ConnectTimeout: 5 * time.Second}
	refusedSSL.forget(target.address()) // a port used before may have refused SSL
	ok, err := VerifyLogin(context.Background(), target, "postgres", "secret")
	require.Error(t, err)
	assert.False(t, ok)
	assert.Equal(t, ClassUnreachable, Classify(err), "%v", err)
	s.checkAllClosed(t)
}

func TestNoConnectionLeftOpenWhenTheServerHasNoTLS(t *testing.T) {
	// Every pgops server: no TLS, so sslmode=prefer's first socket is answered "N".
	s := startLeakServer(t, true)
	target := Target{Host: "127.0.0.1", Port: s.ln.Addr().(*net.TCPAddr).Port, SSLMode: "prefer", ConnectTimeout: 5 * time.Second}
	refusedSSL.forget(target.address()) // a port used before may have refused SSL
	_, err := VerifyLogin(context.Background(), target, "postgres", "secret")
	require.Error(t, err, "the second connection is cut off at its startup packet")
	s.checkAllClosed(t)
}
