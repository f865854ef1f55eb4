package main

import (
	"strings"
	"testing"
)

func TestResolveConfig(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	for _, tc := range []struct {
		flag    int
		env     map[string]string
		device  int
		library string
		errText string
	}{
		{-1, nil, 0, "libcuda.so.1", ""},
		{-1, map[string]string{deviceEnv: "2"}, 2, "libcuda.so.1", ""},
		{1, map[string]string{deviceEnv: "2"}, 1, "libcuda.so.1", ""},
		{-1, map[string]string{libraryEnv: "/x/libfake.so"}, 0, "/x/libfake.so", ""},
		{-1, map[string]string{deviceEnv: "gpu0"}, 0, "libcuda.so.1", deviceEnv},
		{-1, map[string]string{deviceEnv: "-3"}, 0, "libcuda.so.1", "ordinal"},
	} {
		c := resolveConfig(tc.flag, env(tc.env))
		if tc.errText != "" {
			if c.err == nil || !strings.Contains(c.err.Error(), tc.errText) {
				t.Errorf("resolveConfig(%d, %v) error = %v, want one mentioning %q", tc.flag, tc.env, c.err, tc.errText)
			}
			continue
		}
		if c.err != nil || c.device != tc.device || c.library != tc.library {
			t.Errorf("resolveConfig(%d, %v) = %+v, want device %d library %q", tc.flag, tc.env, c, tc.device, tc.library)
		}
	}
}
