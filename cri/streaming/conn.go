package streaming

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"

	"github.com/go-logr/logr"
	"k8s.io/klog/v2"
)

// streamContext ties r's context to the connection the stream takes
// over: it ends when that connection fails or is closed, by the client or
// by the server at the end of the stream, so the runtime call on the other
// end (an exec, an attach) stops with it. net/http cancels a hijacked
// request's context only when a read of the connection fails, which a
// WebSocket closed cleanly by the client never causes: its close message
// ends the stream, and the server closes the connection. done must be
// called when the handler returns.
//
// The context also carries the klog logger that k8s.io/streaming's
// WebSocket code logs through: it logs, as an error, the end of every
// connection the server closes (how each stream ends) and each protocol
// error of a client; corrald logs those at debug level.
func (s *Server) streamContext(w http.ResponseWriter, r *http.Request) (http.ResponseWriter, *http.Request, func()) {
	ctx, cancel := context.WithCancel(r.Context())
	ctx = klog.NewContext(ctx, logr.FromSlogHandler(debugOnly{s.log.Handler()}))
	return &hijackWatch{ResponseWriter: w, gone: cancel}, r.WithContext(ctx), cancel
}

type hijackWatch struct {
	http.ResponseWriter
	gone func()
}

// Hijack hands over the connection, and a reader whose end (an error,
// EOF) means the client is gone. Every stream protocol reads its
// connection for as long as it lasts, so a read that fails is the end.
func (h *hijackWatch) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := h.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("the connection cannot be taken over")
	}
	c, rw, err := hj.Hijack()
	if err != nil {
		return nil, nil, err
	}
	wc := &watchedConn{Conn: c, gone: h.gone}
	var r io.Reader = wc
	// What net/http read ahead of the request is the stream's first bytes.
	if n := rw.Reader.Buffered(); n > 0 {
		ahead, _ := rw.Reader.Peek(n)
		r = io.MultiReader(bytes.NewReader(bytes.Clone(ahead)), wc)
	}
	return wc, bufio.NewReadWriter(bufio.NewReader(r), rw.Writer), nil
}

type watchedConn struct {
	net.Conn
	once sync.Once
	gone func()
}

func (c *watchedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil {
		c.once.Do(c.gone)
	}
	return n, err
}

func (c *watchedConn) Close() error {
	c.once.Do(c.gone)
	return c.Conn.Close()
}

// debugOnly turns every record into a debug one.
type debugOnly struct{ h slog.Handler }

func (d debugOnly) Enabled(ctx context.Context, _ slog.Level) bool {
	return d.h.Enabled(ctx, slog.LevelDebug)
}

func (d debugOnly) Handle(ctx context.Context, r slog.Record) error {
	r.Level = slog.LevelDebug
	return d.h.Handle(ctx, r)
}

func (d debugOnly) WithAttrs(as []slog.Attr) slog.Handler { return debugOnly{d.h.WithAttrs(as)} }
func (d debugOnly) WithGroup(g string) slog.Handler       { return debugOnly{d.h.WithGroup(g)} }
