package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image/png"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/payments-watcher/watcher/config"
	"github.com/payments-watcher/watcher/internal/logtest"
	"github.com/payments-watcher/watcher/statuspage"
)

// chromiumInstall is how to get the browser the status page tests drive.
const chromiumInstall = "apt-get update && apt-get install -y --no-install-recommends chromium"

// chromium runs headless Chromium with args and returns its standard output. A
// missing browser fails the test.
func chromium(t *testing.T, args ...string) []byte {
	t.Helper()
	bin, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("chromium not found (%v); install it: %s", err, chromiumInstall)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	base := []string{"--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
		"--no-first-run", "--user-data-dir=" + t.TempDir()}
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, append(base, args...)...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("chromium %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return out
}

// The demo's status page, rendered by a real browser, shows every source with both
// charts drawn, and no configured secret.
func TestStatusPageInChromium(t *testing.T) {
	if _, err := exec.LookPath("chromium"); err != nil {
		t.Fatalf("chromium not found; install it: %s", chromiumInstall)
	}
	t.Setenv("TMPDIR", t.TempDir())
	errOut := &logtest.Buffer{}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"demo", "--seed", "5", "--rate", "2", "--nats-listen", "127.0.0.1:0",
			"--http-listen", "", "--admin-listen", "127.0.0.1:0", "--color", "never"}, &logtest.Buffer{}, errOut)
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("demo: %v", err)
		}
	}()
	page := waitStatusPage(t, errOut, done)
	names := waitEverySourcePolled(t, page)

	dom := string(chromium(t, "--virtual-time-budget=2000", "--dump-dom", page))
	for _, n := range names {
		if !strings.Contains(dom, fmt.Sprintf(`id="source-%s"`, n)) {
			t.Errorf("source %s not on the page", n)
		}
	}
	paths := regexp.MustCompile(`<path d="([^"]*)"`).FindAllStringSubmatch(dom, -1)
	if len(paths) != 2*len(names) {
		t.Errorf("%d chart paths for %d sources", len(paths), len(names))
	}
	for _, p := range paths {
		if !strings.HasPrefix(p[1], "M") || strings.Count(p[1], "L") != statuspage.Minutes-1 {
			t.Errorf("chart path d=%q", p[1])
		}
	}
	if !strings.Contains(dom, `id="recent"`) {
		t.Error("no recent transitions on the page")
	}
	for _, s := range demoSecrets(t) {
		if strings.Contains(dom, s.Value) {
			t.Errorf("the page holds the secret %s", s.Key)
		}
	}

	shot := filepath.Join(t.TempDir(), "status.png")
	chromium(t, "--virtual-time-budget=2000", "--screenshot="+shot, "--window-size=1280,2000", page)
	f, err := os.Open(shot)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	if b := img.Bounds(); b.Dx() != 1280 || b.Dy() != 2000 {
		t.Errorf("screenshot of %v", b)
	}
}

// waitStatusPage returns the status page's address the demo prints.
func waitStatusPage(t *testing.T, errOut *logtest.Buffer, done <-chan error) string {
	t.Helper()
	re := regexp.MustCompile(`status page on (http://\S+)`)
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if m := re.FindStringSubmatch(errOut.String()); m != nil {
			return m[1]
		}
		select {
		case err := <-done:
			t.Fatalf("demo stopped: %v\n%s", err, errOut.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
	t.Fatalf("no status page address printed:\n%s", errOut.String())
	return ""
}

// waitEverySourcePolled waits until /status.json shows a successful cycle and a
// transition of every source, and returns the sources' names.
func waitEverySourcePolled(t *testing.T, page string) []string {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		var snap statuspage.Snapshot
		if resp, err := http.Get(page + "status.json"); err == nil {
			err = json.NewDecoder(resp.Body).Decode(&snap)
			resp.Body.Close()
			ready := err == nil && len(snap.Sources) == 5
			var names []string
			for _, s := range snap.Sources {
				names = append(names, s.Name)
				n := 0
				for _, v := range s.Transitions {
					n += v
				}
				ready = ready && s.LastSuccess != nil && n > 0
			}
			if ready {
				return names
			}
			last = fmt.Sprintf("%+v", snap.Sources)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("not every source polled: %s", last)
	return nil
}

// demoSecrets are the secrets of the demo's configuration.
func demoSecrets(t *testing.T) []config.Secret {
	t.Helper()
	raw, _ := demoConfig(t.TempDir(), "nats://127.0.0.1:4222", "http://127.0.0.1:1", "", "")
	cfg, err := config.Parse(raw, os.LookupEnv, os.ReadFile)
	if err != nil {
		t.Fatal(err)
	}
	s := cfg.Secrets()
	if len(s) == 0 {
		t.Fatal("the demo configures no secret to look for")
	}
	return s
}
