package streaming

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"sync"
	"time"

	"github.com/containerd/errdefs"
)

const (
	// tokenTTL is how long a streaming URL can be used: the client connects
	// right after the CRI call, and the kubelet's server allows a minute.
	tokenTTL = time.Minute
	// maxTokens bounds the URLs issued and not yet used, as the kubelet's
	// server does, so a client that asks and never connects cannot grow
	// corrald's memory.
	maxTokens = 1000
	// tokenBytes of randomness in a token: the URL is all that stands
	// between anything on the node's loopback and an exec into a container.
	tokenBytes = 24
)

// tokens maps the single-use tokens in streaming URLs to the CRI request
// each stands for.
type tokens struct {
	now func() time.Time

	mu      sync.Mutex
	pending map[string]pendingRequest
}

type pendingRequest struct {
	req     any
	expires time.Time
}

func newTokens(now func() time.Time) *tokens {
	return &tokens{now: now, pending: map[string]pendingRequest{}}
}

// insert keeps req and returns a new token for it.
func (t *tokens) insert(req any) (string, error) {
	b := make([]byte, tokenBytes)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("streaming token: %w", err)
	}
	token := base64.RawURLEncoding.EncodeToString(b)
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	if len(t.pending) >= maxTokens {
		for k, p := range t.pending {
			if now.After(p.expires) {
				delete(t.pending, k)
			}
		}
		if len(t.pending) >= maxTokens {
			return "", fmt.Errorf("%d streaming URLs issued in the last %s are still unused; connect to them or wait: %w", len(t.pending), tokenTTL, errdefs.ErrResourceExhausted)
		}
	}
	t.pending[token] = pendingRequest{req: req, expires: now.Add(tokenTTL)}
	return token, nil
}

// consume returns the request of token and forgets it; nil if the token
// is unknown, used already, or expired.
func (t *tokens) consume(token string) any {
	t.mu.Lock()
	defer t.mu.Unlock()
	p, ok := t.pending[token]
	if !ok {
		return nil
	}
	delete(t.pending, token)
	if t.now().After(p.expires) {
		return nil
	}
	return p.req
}
