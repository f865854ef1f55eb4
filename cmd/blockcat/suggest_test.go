package main

import (
	"slices"
	"testing"
)

func TestClosest(t *testing.T) {
	names := []string{"tokenizer", "weights", "weights-v2", "zzz"}
	for _, tc := range []struct {
		name string
		want []string
	}{
		{"weigths", []string{"weights"}}, // a swap is one edit
		{"Weights", []string{"weights", "weights-v2"}},
		{"tokenizr", []string{"tokenizer"}},
		{"weights-v3", []string{"weights-v2", "weights"}},
		{"nothing-like-it", nil},
	} {
		if got := closest(tc.name, names, 3); !slices.Equal(got, tc.want) {
			t.Errorf("closest(%q) = %q, want %q", tc.name, got, tc.want)
		}
	}
	if got := orList([]string{"a", "b", "c"}); got != `"a", "b" or "c"` {
		t.Errorf("orList: %s", got)
	}
}
