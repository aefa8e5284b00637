package nri

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/containerd/nri/pkg/adaptation"
)

func TestSloggerWasmDisabledIsNotAnError(t *testing.T) {
	for _, tc := range []struct {
		name  string
		args  []any
		level string
	}{
		{"wasm disabled", []any{adaptation.ErrWasmDisabled}, "level=INFO"},
		{"wasm disabled, wrapped", []any{fmt.Errorf("init: %w", adaptation.ErrWasmDisabled)}, "level=INFO"},
		{"another error", []any{errors.New("plugin crashed")}, "level=ERROR"},
		{"no error argument", []any{"text"}, "level=ERROR"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			s := slogger{slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))}
			s.Errorf(context.Background(), "failed to initialize WASM support: %v", tc.args...)
			if !strings.Contains(buf.String(), tc.level) {
				t.Errorf("logged %q, want %s", buf.String(), tc.level)
			}
		})
	}
}
