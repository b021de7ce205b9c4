// Package codectest holds records for tests of the state record encoding: every
// field, id form and time precision it distinguishes. Package state's codec tests
// and the back ends' storage tests both use them.
package codectest

import (
	"time"

	"github.com/payments-watcher/watcher/diff"
)

// T0 is the reference time of the records: the time they are committed at.
var T0 = time.Date(2026, 11, 22, 10, 0, 3, 120_000_000, time.UTC)

// Rich has every field set, nested items of several kinds and a state outside
// the normalized set.
func Rich() diff.Record {
	return diff.Record{
		Kind:        "payment",
		ID:          "c4d1da72-111e-4d52-bdbf-2e74a2d803d5",
		Status:      diff.Status{Raw: "FAILED", State: diff.Failed, Addendum: "IN_MANUAL_REVIEW", Terminal: true},
		Sequence:    7,
		CreatedAt:   time.Date(2023, 1, 1, 12, 4, 5, 0, time.UTC),
		SettleUntil: T0.Add(24 * time.Hour),
		Stalled:     true,
		Nested: []diff.NestedRecord{
			{Kind: "payment_refund", ID: "b8627ae8-732b-4d25-b947-1df8f4007a29", Status: diff.Status{Raw: "CREATED", State: diff.Pending}, Sequence: 1},
			{Kind: "payment_refund", ID: "r2", Status: diff.Status{Raw: "COMPLETED", State: diff.Completed, Terminal: true}, Sequence: 2},
			{Kind: "payment_onchain_transaction", ID: "0x4a2b", Status: diff.Status{Raw: "BROADCASTED", State: diff.Processing}, Sequence: 4294967295},
			{Kind: "payment_rfi", ID: "", Status: diff.Status{Raw: "", State: "not-a-state", Addendum: "x"}, Sequence: 1},
			{Kind: "payment_refund", ID: "r3", Status: diff.Status{Raw: "FAILED", State: diff.Failed, Terminal: true}, Sequence: 1},
		},
	}
}

// Plain is a typical top-level item without nested items.
func Plain(id string, created time.Time, raw string, state diff.State, terminal bool) diff.Record {
	return diff.Record{
		Kind: "payment", ID: id, Sequence: 1, CreatedAt: created,
		Status: diff.Status{Raw: raw, State: state, Terminal: terminal},
	}
}

// Samples is one record of each kind the encoding treats apart.
func Samples() []diff.Record {
	return []diff.Record{
		Rich(),
		Plain("p1", T0, "CREATED", diff.Pending, false),
		{ID: "zero", Sequence: 1}, // every other field zero: empty strings, zero times, no nested items
		{Kind: "onramp_session", ID: "cos_1", Status: diff.Status{Raw: "weird", State: diff.Unknown}, Sequence: 2,
			CreatedAt: time.Date(1960, 5, 1, 0, 0, 0, 1, time.UTC)}, // before the Unix epoch
		IDForms(),
	}
}

// IDForms has a nested id of every form, and times of every precision.
func IDForms() diff.Record {
	nested := func(id string) diff.NestedRecord {
		return diff.NestedRecord{Kind: "payment_transaction", ID: id, Status: diff.Status{Raw: "CONFIRMED", State: diff.Completed, Terminal: true}, Sequence: 1}
	}
	return diff.Record{
		Kind: "payment", ID: "forms", Sequence: 3, Status: diff.Status{Raw: "COMPLETE", State: diff.Completed, Terminal: true},
		CreatedAt:   time.Date(2026, 11, 3, 23, 6, 25, 163_000_000, time.UTC), // milliseconds
		SettleUntil: time.Date(2026, 11, 4, 23, 6, 25, 0, time.UTC),           // seconds
		Nested: []diff.NestedRecord{
			nested("b8627ae8-732b-4d25-b947-1df8f4007a29"),                               // UUID
			nested("B8627AE8-732B-4D25-B947-1DF8F4007A29"),                               // upper-case UUID: as it is
			nested("4a6c7fa5edb46976dd1c9241feb3aa50ff37f76e66996087f61215967982a2c6"),   // hex
			nested("4A6C7FA5EDB46976DD1C9241FEB3AA50FF37F76E66996087F61215967982A2C6"),   // upper-case hex
			nested("0x52cea0b5ec8a027434878f9e8f019b56e1d2f947607d110fd1f4032ed97082e6"), // 0x hex
			nested("0xABCDEF"), // 0x upper-case hex
			nested("0123"),     // digits only
			nested("abc"), nested("0x"), nested("0xabc"), nested("aBcD"), nested("0Xab"), nested("xyz"), nested(""),
			nested("b8627ae8-732b-4d25-b947-1df8f4007a2"), // one digit short of a UUID
			nested("b8627ae8x732b-4d25-b947-1df8f4007a29"),
		},
	}
}
