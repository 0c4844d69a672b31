// Package daemontest runs the real svcproxy daemon (`svcproxy run`, the
// binary of cmd/svcproxy) inside a network namespace, for the end-to-end
// tests and for the latency benchmark (cmd/svcproxy-bench): build it, start
// it, read its memory use, stop it.
//
// A started daemon is stopped (SIGKILL, by PID) when the test ends, and by
// the kernel if the test process dies first.
package daemontest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/svcproxy/svcproxy/sandbox"
)

// TB is the part of testing.TB the package needs; a program can implement
// it too (the same method set as apiserver.TB).
type TB interface {
	sandbox.TB
	Logf(format string, args ...any)
	Failed() bool
	TempDir() string
}

var _ TB = testing.TB(nil)

// Build compiles ./cmd/svcproxy of the module the working directory belongs
// to into t.TempDir() and returns the binary's path.
func Build(t TB) string {
	t.Helper()
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "svcproxy")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/svcproxy")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// moduleRoot is the first directory at or above the working directory
// holding go.mod.
func moduleRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		if filepath.Dir(dir) == dir {
			return "", fmt.Errorf("no go.mod above %s", wd)
		}
	}
}

// Daemon is `svcproxy run` inside a namespace.
type Daemon struct {
	// Cmd is the process: `ip netns exec NS svcproxy run ...`, which execs
	// svcproxy in place, so Cmd.Process.Pid is the daemon's PID.
	Cmd *exec.Cmd
	// Logs collects the daemon's stdout and stderr.
	Logs *Buffer

	done    chan struct{} // closed once the process has exited and was reaped
	waitErr error         // set before done is closed
}

// Start runs `bin run args...` in ns. When the test ends, a daemon still
// running is killed (SIGKILL) and, if the test failed, its log is logged.
func Start(t TB, bin string, ns *sandbox.NS, args ...string) *Daemon {
	t.Helper()
	d := &Daemon{Logs: &Buffer{}, done: make(chan struct{})}
	d.Cmd = exec.Command("ip", append([]string{"netns", "exec", ns.Name, bin, "run"}, args...)...)
	d.Cmd.Stdout, d.Cmd.Stderr = d.Logs, d.Logs
	// Its own process group (a terminal's Ctrl-C goes to the test or
	// program, which stops the daemon in order), and SIGKILL when the
	// thread that started it dies: that thread stays locked until the
	// daemon has exited, so it dies only with the test process.
	d.Cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := d.Cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		d.waitErr = d.Cmd.Wait()
		close(d.done)
	}()
	if err := <-started; err != nil {
		t.Fatalf("start svcproxy: %v", err)
	}
	t.Cleanup(func() {
		d.Kill()
		if t.Failed() {
			t.Logf("daemon log:\n%s", d.Logs)
		}
	})
	return d
}

// PID is the daemon's process ID.
func (d *Daemon) PID() int { return d.Cmd.Process.Pid }

// Exited reports whether the daemon has exited, and how.
func (d *Daemon) Exited() (bool, error) {
	select {
	case <-d.done:
		return true, d.waitErr
	default:
		return false, nil
	}
}

// Stop sends SIGTERM and waits; the daemon must exit cleanly within 10 s.
func (d *Daemon) Stop(t TB) {
	t.Helper()
	_ = d.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
		if d.waitErr != nil {
			t.Fatalf("daemon exited with %v", d.waitErr)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("daemon did not exit on SIGTERM")
	}
}

// Kill sends SIGKILL (unless the daemon has exited) and waits until it is
// reaped.
func (d *Daemon) Kill() {
	select {
	case <-d.done:
		return
	default:
	}
	// os.Process signals through a pidfd: never a recycled PID.
	_ = d.Cmd.Process.Kill()
	<-d.done
}

// Memory is a process's memory use, from /proc/PID/status.
type Memory struct {
	RSS  uint64 // VmRSS: resident now, bytes
	Peak uint64 // VmHWM: peak resident, bytes
}

// Memory reads the daemon's VmRSS and VmHWM.
func (d *Daemon) Memory() (Memory, error) {
	return ReadMemory(d.PID())
}

// ReadMemory reads VmRSS and VmHWM of process pid.
func ReadMemory(pid int) (Memory, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Memory{}, err
	}
	var m Memory
	for _, l := range strings.Split(string(data), "\n") {
		f := strings.Fields(l)
		if len(f) < 3 || f[2] != "kB" {
			continue
		}
		kb, err := strconv.ParseUint(f[1], 10, 64)
		if err != nil {
			continue
		}
		switch f[0] {
		case "VmRSS:":
			m.RSS = kb << 10
		case "VmHWM:":
			m.Peak = kb << 10
		}
	}
	if m.RSS == 0 {
		return m, fmt.Errorf("/proc/%d/status: no VmRSS (a zombie?)", pid)
	}
	return m, nil
}

// Buffer is a bytes.Buffer safe for concurrent use: the daemon writes to it
// while the test reads.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
