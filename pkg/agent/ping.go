package agent

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/lib/pq"
)

// answer is what a server said to a connection attempt or a query, as pg_isready tells it.
type answer int

const (
	// noResponse: no answer in time (down, hung, or not listening yet).
	noResponse answer = iota
	// rejecting: the server answered but does not accept connections now (starting up,
	// recovering, shutting down, a warm standby): SQLSTATE 57P03.
	rejecting
	// accepting: the server accepts connections (also when it refused this login).
	accepting
)

// classify turns the error of a login or a query into an answer.
func classify(err error) answer {
	if err == nil {
		return accepting
	}
	var pqErr *pq.Error
	if errors.As(err, &pqErr) {
		if pqErr.Code == "57P03" { // cannot_connect_now
			return rejecting
		}
		return accepting
	}
	return noResponse
}

// deadlineConn is a connection whose every read and write must finish within timeout, so a
// hung server (its processes stopped) fails a check instead of blocking it:
// libpq's query cancellation needs an answer from the very server that hangs.
type deadlineConn struct {
	net.Conn
	timeout time.Duration
}

func (c deadlineConn) Read(b []byte) (int, error) {
	if err := c.SetReadDeadline(time.Now().Add(c.timeout)); err != nil {
		return 0, err
	}
	return c.Conn.Read(b)
}

func (c deadlineConn) Write(b []byte) (int, error) {
	if err := c.SetWriteDeadline(time.Now().Add(c.timeout)); err != nil {
		return 0, err
	}
	return c.Conn.Write(b)
}

// deadlineDialer dials connections that are deadlineConns.
type deadlineDialer struct{ timeout time.Duration }

func (d deadlineDialer) Dial(network, address string) (net.Conn, error) {
	return d.DialTimeout(network, address, d.timeout)
}

func (d deadlineDialer) DialTimeout(network, address string, timeout time.Duration) (net.Conn, error) {
	return d.DialContext(context.Background(), network, address)
}

func (d deadlineDialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	c, err := (&net.Dialer{Timeout: d.timeout}).DialContext(ctx, network, address)
	if err != nil {
		return nil, err
	}
	return deadlineConn{Conn: c, timeout: d.timeout}, nil
}

// newConnector connects to the server that the conninfo keys and values in params name,
// every read and write of its connections bounded by timeout.
func newConnector(params [][2]string, timeout time.Duration) (*pq.Connector, error) {
	var dsn strings.Builder
	// lib/pq, like libpq, takes what the DSN leaves out from PG* variables, which a
	// podTemplate may set for psql in the pod: a target_session_attrs=read-write would fail
	// every check of a standby, and options could change the session.
	params = append([][2]string{{"target_session_attrs", "any"}, {"options", ""}}, params...)
	for _, p := range params {
		fmt.Fprintf(&dsn, "%s=%s ", p[0], conninfoQuote(p[1]))
	}
	connector, err := pq.NewConnector(dsn.String())
	if err != nil {
		return nil, err
	}
	connector.Dialer(deadlineDialer{timeout: timeout})
	return connector, nil
}

// openDB opens a pool of at most one connection, kept open, through connector.
func openDB(connector *pq.Connector) *sql.DB {
	db := sql.OpenDB(connector)
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxIdleTime(0)
	db.SetConnMaxLifetime(0)
	return db
}
