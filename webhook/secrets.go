package webhook

import "strings"

// secrets splits a webhook_secret value into its secrets: several, separated by
// commas, are all accepted (rotation: the new one is added, the old one removed once
// the provider signs with the new one). Blanks around each are ignored.
func secrets(value string) []string {
	var out []string
	for _, s := range strings.Split(value, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}
