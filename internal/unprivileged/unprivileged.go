//go:build unix

// Package unprivileged runs a test again as an unprivileged user, for tests
// of what file permissions do: root ignores them, and CI machines often run
// tests as root.
package unprivileged

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Nobody is the user the tests run as: nobody, uid and gid 65534.
const Nobody = 65534

// Run runs the test named test of the current test binary as the user
// nobody, with extra arguments args (test flags), in a copy of the binary
// that nobody can execute and with a temporary directory of its own, and
// fails t if that run fails or does not pass the test. It waits at most
// timeout. The caller must be root: call it when os.Geteuid() == 0 and run
// the test itself otherwise.
func Run(t testing.TB, test string, timeout time.Duration, args ...string) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// The test binary lives in the go command's private build directory:
	// copy it where nobody can run it.
	home, err := os.MkdirTemp("", "fractal-nobody-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(home) })
	b, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(home, filepath.Base(exe))
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(home, "tmp")
	if err := os.Mkdir(tmp, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{home, tmp} {
		if err := os.Chown(d, Nobody, Nobody); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(home, 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"-test.run=^" + test + "$", "-test.count=1", "-test.v"}, args...)...)
	cmd.Dir = tmp
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp, "HOME="+tmp, "GOCACHE="+filepath.Join(tmp, "gocache"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: Nobody, Gid: Nobody}}
	out, err := cmd.CombinedOutput()
	t.Logf("as uid %d (root ignores file permissions):\n%s", Nobody, out)
	if err != nil {
		t.Fatalf("unprivileged run of %s: %v", test, err)
	}
	if !strings.Contains(string(out), "--- PASS: "+test) {
		t.Fatalf("unprivileged run of %s did not pass", test)
	}
}
