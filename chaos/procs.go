package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// proc is a child process whose end can be awaited more than once.
type proc struct {
	cmd  *exec.Cmd
	out  *outputWriter
	done chan struct{}
	err  error // Wait's result, once done is closed
}

// outputWriter appends a process's output to a log and notes that there was some.
type outputWriter struct {
	log   io.Writer
	wrote atomic.Bool
}

func (w *outputWriter) Write(b []byte) (int, error) {
	w.wrote.Store(true)
	return w.log.Write(b)
}

// startProc starts bin with args, its output appended to log, in the harness's
// environment with env (KEY=value) added.
func startProc(bin string, args []string, log io.Writer, env ...string) (*proc, error) {
	cmd := exec.Command(bin, args...)
	if len(env) > 0 {
		cmd.Env = append(os.Environ(), env...)
	}
	out := &outputWriter{log: log}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", filepath.Base(bin), err)
	}
	p := &proc{cmd: cmd, out: out, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// errStuck means a process outlived its SIGKILL by minutes: the machine is too
// overloaded (a process waiting for the disk cannot die) for the run to mean anything.
var errStuck = errors.New("process still alive 2 minutes after SIGKILL")

// stop sends sig and waits up to grace for the exit, then kills the process. It
// returns Wait's result, or errStuck.
func (p *proc) stop(sig syscall.Signal, grace time.Duration) error {
	_ = p.cmd.Process.Signal(sig)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.done:
		return p.err
	case <-t.C:
	}
	_ = p.cmd.Process.Kill()
	stuck := time.NewTimer(2 * time.Minute)
	defer stuck.Stop()
	select {
	case <-p.done:
	case <-stuck.C:
		return fmt.Errorf("%s (pid %d): %w", filepath.Base(p.cmd.Path), p.cmd.Process.Pid, errStuck)
	}
	if sig == syscall.SIGKILL {
		return p.err
	}
	return fmt.Errorf("%s did not exit within %v of %v; killed", filepath.Base(p.cmd.Path), grace, sigName(sig))
}

// awaitOutput waits until the process has written something (it is past its start,
// with its signal handlers set) or has ended; it reports false when d passes first.
func (p *proc) awaitOutput(d time.Duration) bool {
	deadline := time.Now().Add(d)
	for !p.out.wrote.Load() && !p.exited() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

// exited reports whether the process has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// serverAddr returns a loopback address for a server that stops and restarts on it:
// a port free a moment ago and, where the system says which ports it hands out to
// port-0 listeners and outgoing connections, outside that range, so that none of
// those takes it while the server is down.
func serverAddr(rng *rand.Rand) (string, error) {
	low := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil {
				low = n
			}
		}
	}
	if low > 11000 {
		for range 50 {
			addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(10000+rng.IntN(low-11000)))
			if ln, err := net.Listen("tcp", addr); err == nil {
				ln.Close()
				return addr, nil
			}
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// moduleRoot returns the directory of the main module the go tool sees from the
// working directory.
func moduleRoot(goTool string) (string, error) {
	out, err := exec.Command(goTool, "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("go env GOMOD: not inside the watcher module; run from its checkout or pass -watcher and -nats-server")
	}
	return filepath.Dir(gomod), nil
}

// goTool returns the go command: the one on PATH, else the one of this toolchain.
func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(os.Getenv("GOROOT"), "bin", "go")
}

// buildBinaries builds watcher (./cmd/watcher) and nats-server (from the module's
// nats-server dependency) into dir.
func buildBinaries(ctx context.Context, dir string) (watcher, natsServer string, err error) {
	gt := goTool()
	root, err := moduleRoot(gt)
	if err != nil {
		return "", "", err
	}
	watcher, natsServer = filepath.Join(dir, "watcher"), filepath.Join(dir, "nats-server")
	for _, b := range []struct{ out, pkg string }{
		{watcher, "./cmd/watcher"}, {natsServer, "github.com/nats-io/nats-server/v2"},
	} {
		cmd := exec.CommandContext(ctx, gt, "build", "-o", b.out, b.pkg)
		cmd.Dir = root
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil {
			return "", "", fmt.Errorf("go build %s: %w\n%s", b.pkg, err, stderr.String())
		}
	}
	return watcher, natsServer, nil
}

// natsServer runs nats-server with JetStream on one address and store directory,
// across restarts.
type natsServer struct {
	bin, addr, storeDir string
	// extra are further arguments: a cluster node's name, routes and monitoring port.
	extra []string
	log   *os.File
	p     *proc
}

// args returns the server's command line, the same at every start.
func (n *natsServer) args() ([]string, error) {
	host, port, err := net.SplitHostPort(n.addr)
	if err != nil {
		return nil, err
	}
	return append([]string{"-a", host, "-p", port, "-js", "-sd", n.storeDir}, n.extra...), nil
}

func (n *natsServer) url() string { return "nats://" + n.addr }

// start starts the server and waits until JetStream answers.
func (n *natsServer) start(ctx context.Context) error {
	args, err := n.args()
	if err != nil {
		return err
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		p, err := startProc(n.bin, args, n.log)
		if err != nil {
			return err
		}
		n.p = p
		for !p.exited() {
			err := jetStreamReady(ctx, n.url())
			if err == nil {
				return nil
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				_ = p.stop(syscall.SIGKILL, 10*time.Second)
				return fmt.Errorf("nats-server on %s: JetStream not ready within 60s: %v", n.addr, err)
			}
			poll := time.NewTimer(50 * time.Millisecond)
			select {
			case <-p.done:
			case <-poll.C:
			}
			poll.Stop()
		}
		// An exit at start is retried while the deadline allows: the port may be
		// held for a moment by something else.
		if time.Now().After(deadline) {
			return fmt.Errorf("nats-server exited at start: %v (log %s)", p.err, n.log.Name())
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// stop ends the server with sig (SIGTERM: a clean shutdown, SIGKILL: none) and
// returns the signal that ended it: SIGKILL when a SIGTERM took over a minute.
func (n *natsServer) stop(sig syscall.Signal) (syscall.Signal, error) {
	if n.p == nil || n.p.exited() {
		return sig, nil
	}
	err := n.p.stop(sig, time.Minute)
	if _, ok := errors.AsType[*exec.ExitError](err); ok || err == nil {
		return sig, nil // the signal's own ending, or the server's exit code after it
	}
	if errors.Is(err, errStuck) {
		return sig, err
	}
	return syscall.SIGKILL, nil
}

func jetStreamReady(ctx context.Context, url string) error {
	nc, err := nats.Connect(url, nats.Timeout(time.Second), nats.NoReconnect())
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_, err = js.AccountInfo(ctx)
	return err
}

// sigName names the signals the harness sends.
func sigName(sig syscall.Signal) string {
	switch sig {
	case syscall.SIGKILL:
		return "SIGKILL"
	case syscall.SIGTERM:
		return "SIGTERM"
	}
	return "signal " + strconv.Itoa(int(sig))
}
