package config

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/payments-watcher/watcher/publish"
)

// syncAlways is how nats.embedded.sync_interval asks for an fsync of every message.
const syncAlways = "always"

// syncInterval parses nats.embedded.sync_interval: "always" (also when empty) is 0, a
// fsync of every message before its acknowledgement; anything else is a positive
// duration.
func (v *validator) syncInterval(key, val string) time.Duration {
	if val == "" || val == syncAlways {
		return 0
	}
	d, err := time.ParseDuration(val)
	switch {
	case err != nil:
		v.addf(key, "%q is neither %s nor a duration (e.g. 1s, 2m)", val, syncAlways)
	case d <= 0:
		v.addf(key, "%q must be positive, or %s", val, syncAlways)
	default:
		return d
	}
	return 0
}

// syncInterval renders Embedded.SyncInterval as the configuration file writes it.
func syncInterval(d time.Duration) string {
	if d <= 0 {
		return syncAlways
	}
	return d.String()
}

// sizeUnits are the units of a byte size, in powers of 1024 as nats-server reads
// them; matched without regard to case.
var sizeUnits = []struct {
	suffix string
	shift  uint
}{
	{"kib", 10}, {"mib", 20}, {"gib", 30}, {"tib", 40},
	{"kb", 10}, {"mb", 20}, {"gb", 30}, {"tb", 40},
	{"k", 10}, {"m", 20}, {"g", 30}, {"t", 40},
	{"b", 0},
}

// DefaultRetainAckedMaxBytes is the default of nats.retain_acked_max_bytes: the most
// the retained acknowledged events may take in the state, compressed.
const DefaultRetainAckedMaxBytes = 64 << 20

// unboundedRetention warns when acknowledged events are retained with no bound on
// their size: the state file then holds retain_acked's worth of events at whatever
// rate they come.
func (v *validator) unboundedRetention(n publish.Config) {
	if n.RetainAcked > 0 && n.RetainAckedMaxBytes == 0 {
		v.warnings = append(v.warnings, fmt.Sprintf("nats.retain_acked_max_bytes: 0 leaves the acknowledged events retained for nats.retain_acked (%s) unbounded: "+
			"about 400 bytes each in the state file, so %s at 3,000 events/s; bbolt does not give the space back without watcher state compact",
			n.RetainAcked, unboundedExample(n.RetainAcked)))
	}
}

// outboxPace returns nats.outbox_pace: DefaultOutboxPace, or max_outbox when that is
// smaller, when the key is not set (val nil); an explicit 0 turns pacing off. A
// negative value, or one above nats.max_outbox (maxOutbox, defaults applied), is an
// error: the walks would pace at a size the outbox never reaches before polling stops.
func (v *validator) outboxPace(val *int, maxOutbox int) int {
	if val == nil {
		if maxOutbox > 0 {
			return min(DefaultOutboxPace, maxOutbox)
		}
		return DefaultOutboxPace
	}
	switch n := *val; {
	case n < 0:
		v.addf("nats.outbox_pace", "%d must not be negative (0 turns pacing off)", n)
	case maxOutbox > 0 && n > maxOutbox:
		v.addf("nats.outbox_pace", "%d must not exceed nats.max_outbox (%d)", n, maxOutbox)
	}
	return *val
}

// unboundedExample is what retain's worth of events at 3,000 events/s of 400 bytes
// takes, rounded to MB.
func unboundedExample(retain time.Duration) string {
	return fmt.Sprintf("%.0f MB", retain.Seconds()*3000*400/1e6)
}

// sizeOr parses a byte size as size does, def when val is "" (an explicit 0 stays 0).
func (v *validator) sizeOr(key, val string, def int64) int64 {
	if val == "" {
		return def
	}
	return v.size(key, val)
}

// size parses a byte size: a whole number of bytes, optionally followed by a unit
// (K, M, G, T, with or without B or iB: powers of 1024). "" is 0.
func (v *validator) size(key, val string) int64 {
	if val == "" {
		return 0
	}
	num, shift := strings.TrimSpace(val), uint(0)
	lower := strings.ToLower(num)
	for _, u := range sizeUnits {
		if strings.HasSuffix(lower, u.suffix) {
			num, shift = strings.TrimSpace(num[:len(num)-len(u.suffix)]), u.shift
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	switch {
	case err != nil:
		v.addf(key, "%q is not a size (bytes, or with a unit: 512MiB, 10GiB)", val)
	case n < 0:
		v.addf(key, "%q must not be negative (0 means no limit)", val)
	case n > math.MaxInt64>>shift:
		v.addf(key, "%q is too large", val)
	default:
		return n << shift
	}
	return 0
}
