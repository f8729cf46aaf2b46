package credential

import (
	"bytes"
	"net"
	"sync"
	"time"
)

// sslRefusalTTL is how long a server's "no" to an SSL request is remembered.
const sslRefusalTTL = time.Minute

// With sslmode=prefer, lib/pq (v1.12.3) asks the server for SSL and, when the server says
// no, closes that connection and dials a second one without SSL, where libpq would carry on
// on the same socket. Each login to a server without TLS (pgops's servers have none) then
// costs two TCP connections and two backend forks of the postmaster. refusedSSL remembers,
// per server address and for sslRefusalTTL, that the server said no, and a Target with
// sslmode=prefer dials that address with sslmode=disable meanwhile: what prefer would have
// ended with, in one connection. prefer authenticates nothing and falls back to plaintext
// whenever SSL is refused; the one difference is that a refusal (a forged one included) now
// holds for that address for the TTL instead of one connection, and a server that gains TLS
// is used with it again within the TTL. A passive listener sees SCRAM exchanges only.
var refusedSSL = &sslRefusals{at: map[string]time.Time{}}

type sslRefusals struct {
	mu sync.Mutex
	at map[string]time.Time
}

// recent tells whether the server at addr refused SSL within sslRefusalTTL before now.
func (r *sslRefusals) recent(addr string, now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	at, ok := r.at[addr]
	return ok && now.Sub(at) < sslRefusalTTL
}

// record remembers that the server at addr refused SSL at now, and forgets addresses whose
// refusal is older than the TTL (pod addresses come and go).
func (r *sslRefusals) record(addr string, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for a, at := range r.at {
		if now.Sub(at) >= sslRefusalTTL {
			delete(r.at, a)
		}
	}
	r.at[addr] = now
}

// sslRequest is the protocol's SSLRequest packet: length 8, code 80877103.
var sslRequest = []byte{0, 0, 0, 8, 4, 210, 22, 47}

// sslWatch is a connection on which the driver may ask for SSL first: it records the
// server's refusal (a single 'N' in answer to the SSLRequest) in refusedSSL.
type sslWatch struct {
	net.Conn
	addr string
	// asked is set when the first write was the SSLRequest; watched once the answer (or a
	// first write of anything else) has been seen.
	asked, watched bool
}

func (c *sslWatch) Write(p []byte) (int, error) {
	if !c.watched && !c.asked {
		if bytes.Equal(p, sslRequest) {
			c.asked = true
		} else {
			c.watched = true
		}
	}
	return c.Conn.Write(p)
}

func (c *sslWatch) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if c.asked && !c.watched && n > 0 {
		c.watched = true
		if p[0] == 'N' {
			refusedSSL.record(c.addr, time.Now())
		}
	}
	return n, err
}
