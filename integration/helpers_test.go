package integration

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// startServer runs blockd serve on a free loopback port and waits until it
// has written its address to the ready FIFO.
func startServer(t *testing.T, data string, env []string, extra ...string) *server {
	t.Helper()
	return startServerIn(t, "", data, env, "127.0.0.1:0", extra...)
}

// startServerIn runs blockd serve listening on listen, inside network
// namespace ns (the current one if ""), and waits until it has written its
// address to the ready FIFO. The process is killed when the test ends.
func startServerIn(t *testing.T, ns, data string, env []string, listen string, extra ...string) *server {
	t.Helper()
	ready := filepath.Join(t.TempDir(), "ready")
	if err := syscall.Mkfifo(ready, 0o600); err != nil {
		t.Fatal(err)
	}
	// Read-write open does not wait for the writer.
	fifo, err := os.OpenFile(ready, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fifo.Close()
	s := &server{data: data, env: env, log: &syncBuffer{}, exited: make(chan error, 1)}
	args := append([]string{"serve", "--data", data, "--listen", listen, "--ready-file", ready}, extra...)
	s.cmd = inNetns(ns, filepath.Join(bin, "blockd"), args...)
	s.cmd.Stderr = s.log
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { s.exited <- s.cmd.Wait() }()
	t.Cleanup(func() {
		s.cmd.Process.Kill()
		err := <-s.exited
		s.exited <- err
		if t.Failed() {
			t.Logf("blockd %s log:\n%s", s.addr, s.log.String())
		}
	})
	line := make(chan string, 1)
	go func() {
		l, _ := bufio.NewReader(fifo).ReadString('\n')
		line <- strings.TrimSpace(l)
	}()
	select {
	case s.addr = <-line:
	case err := <-s.exited:
		s.exited <- err
		t.Fatalf("blockd exited before serving: %v\n%s", err, s.log.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("blockd did not become ready\n%s", s.log.String())
	}
	return s
}

// inNetns returns a command running path with args inside network
// namespace ns, or directly if ns is "". `ip netns exec` execs the program,
// so the command's process is the program itself.
func inNetns(ns, path string, args ...string) *exec.Cmd {
	if ns == "" {
		return exec.Command(path, args...)
	}
	return exec.Command("ip", append([]string{"netns", "exec", ns, path}, args...)...)
}
