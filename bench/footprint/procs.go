package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// proc is a child process: one of the daemon, the simulator and nats-server. Its
// output goes to a log file in the run's directory.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{} // closed when the process has exited
	err  error         // its exit status, set before done is closed
	// stopped is set by stop, which a second time returns nil at once.
	stopped bool
}

// start runs bin with args, its output appended to logPath. The process gets its own
// process group, so that a Ctrl-C at the terminal reaches the harness alone and the
// harness stops the children in order; should the harness itself be killed, the
// kernel sends the child SIGTERM (Linux's parent-death signal).
func start(name, bin string, args []string, logPath string) (*proc, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("%s: log file: %w", name, err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: start %s: %w", name, bin, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// exited reports whether the process has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM and waits up to grace for the process to exit, then kills it.
// It returns the exit status of a process that had ended before it was asked to, or
// an error when it had to be killed or exited with a non-zero status; a process
// ended by the SIGTERM itself is no error, nor is a second stop.
func (p *proc) stop(grace time.Duration) error {
	if p.stopped {
		return nil
	}
	p.stopped = true
	if p.exited() {
		return p.exitError()
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		if ee, ok := p.err.(*exec.ExitError); ok && ee.ExitCode() > 0 {
			return fmt.Errorf("%s (pid %d) stopped with %v after SIGTERM; log %s%s", p.name, p.pid(), p.err, p.log, logTail(p.log))
		}
		return nil
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("%s (pid %d) did not stop within %s of SIGTERM and was killed; log %s", p.name, p.pid(), grace, p.log)
	}
}

// exitError describes how an ended process exited, naming its log.
func (p *proc) exitError() error {
	if p.err == nil {
		return fmt.Errorf("%s (pid %d) exited; log %s", p.name, p.pid(), p.log)
	}
	return fmt.Errorf("%s (pid %d) exited: %v; log %s%s", p.name, p.pid(), p.err, p.log, logTail(p.log))
}

// logTail returns the last lines of a log file, indented, for an error message.
func logTail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil || len(b) == 0 {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	lines = lines[max(0, len(lines)-5):]
	return ":\n    " + strings.Join(lines, "\n    ")
}

// await polls ready every 100ms until it returns nil, the process exits (an error
// naming its log) or timeout passes (the last error from ready).
func (p *proc) await(ctx context.Context, timeout time.Duration, what string, ready func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := ready()
		if err == nil {
			return nil
		}
		if p.exited() {
			return p.exitError()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: %s not ready within %s: %v; log %s", p.name, what, timeout, err, p.log)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// freePort returns a loopback address with a port nothing listens on now.
func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free loopback port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// dialable reports whether something accepts connections on addr.
func dialable(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	return c.Close()
}

// moduleRoot returns the directory of the go.mod of the watcher checkout the
// harness runs in.
func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("go env GOMOD: not inside the watcher module; run from its checkout")
	}
	return filepath.Dir(mod), nil
}

// build runs go build -o out pkg in the module root.
func build(ctx context.Context, root, out, pkg string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, pkg)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build -o %s %s: %w\n%s", out, pkg, err, b)
	}
	return nil
}
