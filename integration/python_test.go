package integration

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// debianPython is the interpreter the Python tests run under: Debian's,
// whose python3-pytest, python3-numpy and python3-torch packages .ci/run
// installs.
const debianPython = "/usr/bin/python3"

// TestPythonClient runs the pytest suite of the Python client
// (python/tests) against the blockd and blockcat built for this package:
// real blockd and `blockcat agent` processes, reads into bytes and numpy
// arrays, submit/wait/cancel, errors, bad input, two applications, an
// application killed mid-read, and load_safetensors; reads into CUDA
// device memory (IPC handles and VMM fds, through the gpu provider plugin
// built for this package, on the stand-in driver the suite compiles with
// gcc); and striped volumes in etcd (skipped without the etcd binary).
func TestPythonClient(t *testing.T) {
	if _, err := os.Stat(debianPython); err != nil {
		t.Skipf("%s not found: the Python client's tests need Debian's python3", debianPython)
	}
	for _, mod := range []string{"pytest", "numpy"} {
		if out, err := exec.Command(debianPython, "-c", "import "+mod).CombinedOutput(); err != nil {
			t.Skipf("%s has no %s (apt-get install python3-%s): %s", debianPython, mod, mod, strings.TrimSpace(string(out)))
		}
	}
	cmd := exec.Command(debianPython, "-m", "pytest", "-q", "-p", "no:cacheprovider", "python/tests")
	cmd.Dir = ".."
	cmd.Env = append(os.Environ(), "BLOCKXFER_BIN="+bin, "PYTHONDONTWRITEBYTECODE=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("pytest python/tests: %v\n%s", err, out)
	}
	t.Logf("pytest python/tests:\n%s", out)
}
