package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
)

// Where device memory cannot be served, the agent says so at start and in
// the error its refusals carry, naming why: --gpu off, or no plugin.
func TestAgentDeviceMemoryUnavailable(t *testing.T) {
	for _, tc := range []struct {
		args []string
		why  string
	}{
		{[]string{"--gpu", "off"}, "--gpu off"},
		{[]string{"--plugin-dir", t.TempDir()}, "no gpu provider plugin"},
	} {
		f, _, _, _, err := parseAgentFlags(tc.args, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		var logs bytes.Buffer
		device := gpuDevices(context.Background(), f, slog.New(slog.NewTextHandler(&logs, nil)), io.Discard)
		if !strings.Contains(logs.String(), "not served") || !strings.Contains(logs.String(), tc.why) {
			t.Errorf("%v: start-up log %q does not say why device memory is not served", tc.args, logs.String())
		}
		if p, err := device(context.Background(), 0); p != nil || err == nil || !strings.Contains(err.Error(), tc.why) {
			t.Errorf("%v: Device(0) = %v, %v; want an error saying %q", tc.args, p, err, tc.why)
		}
	}
	if _, _, _, _, err := parseAgentFlags([]string{"--gpu", "on"}, io.Discard); err == nil || !strings.Contains(err.Error(), "auto or off") {
		t.Errorf("--gpu on: %v, want a usage error", err)
	}
}
