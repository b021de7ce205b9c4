package config

import (
	"strings"
	"testing"
)

func TestAdmin(t *testing.T) {
	const sources = `
sources:
  - name: cpn
    provider: circle_cpn_payments
    api_key: k
`
	files := func(name string) ([]byte, error) {
		if name == "/etc/watcher/admin-token" {
			return []byte("s3cret-token\n"), nil
		}
		return readTestdata(name)
	}
	for _, tc := range []struct {
		name, block string
		listen      string
		token       string
		err         string
	}{
		{name: "default", listen: DefaultAdminListen},
		{name: "disabled", block: "admin:\n  listen: \"\"\n", listen: ""},
		{name: "socket", block: "admin:\n  listen: unix:/run/watcher/admin.sock\n", listen: "unix:/run/watcher/admin.sock"},
		{name: "relative socket", block: "admin:\n  listen: unix:admin.sock\n", err: "admin.listen: \"unix:admin.sock\": the socket path must be absolute"},
		{name: "loopback v6", block: "admin:\n  listen: \"[::1]:9465\"\n", listen: "[::1]:9465"},
		{name: "localhost", block: "admin:\n  listen: localhost:9465\n", listen: "localhost:9465"},
		{name: "any without token", block: "admin:\n  listen: 0.0.0.0:9465\n", err: "admin.listen: \"0.0.0.0:9465\" can be reached from other hosts, but admin.token_file is not set"},
		{name: "empty host without token", block: "admin:\n  listen: :9465\n", err: "admin.token_file is not set"},
		{name: "any with token", block: "admin:\n  listen: 0.0.0.0:9465\n  token_file: /etc/watcher/admin-token\n", listen: "0.0.0.0:9465", token: "s3cret-token"},
		{name: "not an address", block: "admin:\n  listen: nowhere\n", err: "admin.listen: \"nowhere\" is not a host:port address"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Parse([]byte(tc.block+sources), testEnv(nil), files)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Admin.Listen != tc.listen || cfg.Admin.Token != tc.token {
				t.Errorf("admin = %+v, want listen %q token %q", cfg.Admin, tc.listen, tc.token)
			}
			out, err := cfg.Effective()
			if err != nil {
				t.Fatal(err)
			}
			if tc.token != "" && strings.Contains(string(out), tc.token) {
				t.Errorf("config check prints the admin token:\n%s", out)
			}
		})
	}
}
