package selftest

import (
	"fmt"
	"io"
	"strings"
)

// PrintCheck prints one check as text: its status and name, what it
// exercised, and what it found (or why it was skipped), with the kernel's
// errno and extended ack when a kernel call failed.
func PrintCheck(w io.Writer, c Check) {
	head := fmt.Sprintf("%s %s", strings.ToUpper(string(c.Status)), c.Name)
	var notes []string
	if c.Transport != nil {
		notes = append(notes, *c.Transport)
	}
	if c.Status != Skip {
		notes = append(notes, fmt.Sprintf("%.3fs", c.Seconds))
	}
	if len(notes) > 0 {
		head += " (" + strings.Join(notes, ", ") + ")"
	}
	fmt.Fprintln(w, head)
	fmt.Fprintf(w, "     exercised: %s\n", c.Exercises)
	if c.Detail != "" {
		fmt.Fprintf(w, "     %s\n", c.Detail)
	}
	if c.Errno != nil || c.Extack != nil {
		var k []string
		if c.KernelOp != nil {
			k = append(k, *c.KernelOp)
		}
		if c.Errno != nil {
			k = append(k, fmt.Sprintf("%s (errno %d)", *c.Errno, *c.ErrnoValue))
		}
		if c.Extack != nil {
			k = append(k, fmt.Sprintf("extack %q", *c.Extack))
		}
		fmt.Fprintf(w, "     kernel: %s\n", strings.Join(k, ": "))
	}
}

// PrintSummary prints the paths the selftest took and its counts.
func PrintSummary(w io.Writer, rep *Report) {
	rx := "did not run"
	if rep.Transport != nil {
		rx = "ran over " + *rep.Transport
	}
	if rep.FallbackReason != nil {
		rx += " (not the NIC: " + *rep.FallbackReason + ")"
	}
	tx := "unknown (no session)"
	if rep.ServerSend != nil {
		tx = *rep.ServerSend
	}
	fmt.Fprintf(w, "rx checks %s; blockd sends with %s\n", rx, tx)
	fmt.Fprintf(w, "selftest of %s: %d passed, %d failed, %d skipped\n", rep.Server, rep.PassedChecks, rep.FailedChecks, rep.SkippedChecks)
}
