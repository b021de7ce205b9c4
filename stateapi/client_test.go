package stateapi

import "testing"

func TestDialAddr(t *testing.T) {
	for listen, want := range map[string]string{
		"127.0.0.1:9465": "127.0.0.1:9465",
		":9465":          "127.0.0.1:9465",
		"0.0.0.0:9465":   "127.0.0.1:9465",
		"[::]:9465":      "[::1]:9465",
		"10.1.2.3:80":    "10.1.2.3:80",
	} {
		if got, err := DialAddr(listen); err != nil || got != want {
			t.Errorf("DialAddr(%q) = %q, %v; want %q", listen, got, err, want)
		}
	}
	for _, listen := range []string{"", "127.0.0.1:0", "nonsense"} {
		if got, err := DialAddr(listen); err == nil {
			t.Errorf("DialAddr(%q) = %q, want an error", listen, got)
		}
	}
}
