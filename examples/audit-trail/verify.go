package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/payments-watcher/watcher/event"
)

// problem is one finding of verify, naming the table, the source (when the row has
// one) and the stream sequence of the row it concerns.
type problem struct {
	table     string
	source    string
	streamSeq uint64
	what      string
}

func (p problem) String() string {
	s := p.table
	if p.source != "" {
		s += " source " + p.source
	}
	return fmt.Sprintf("%s stream sequence %d: %s", s, p.streamSeq, p.what)
}

// streamRange is what verify needs of the stream: its first and last sequence and
// the sequences deleted in between.
type streamRange struct {
	first, last uint64
	deleted     map[uint64]bool
}

// report is the outcome of verify. The trail is sound when problems is empty;
// notes are facts worth knowing that prove nothing wrong.
type report struct {
	problems    []problem
	notes       []string
	events      int
	deadLetters int
	chains      int
}

// verify checks the audit trail against itself and the stream:
//
//   - each source's chain: positions 1, 2, 3… without holes, each prev_hash the
//     previous row's hash, each hash recomputed from the row (rowHash);
//   - each row's columns and event document agree with its hashed body;
//   - every stream sequence from the later of the stream's first sequence and the
//     trail's lowest one, up to the trail's highest, is in exactly one of the two
//     tables (sequences the stream deleted excepted);
//   - each item's sequences have no holes between its lowest and highest, other
//     than the sequences of its events kept as dead letters (those are noted).
func verify(ctx context.Context, pool *pgxpool.Pool, stream streamRange) (report, error) {
	var r report
	seqs := map[uint64]string{} // stream sequence -> table
	if err := verifyChains(ctx, pool, &r, seqs); err != nil {
		return r, err
	}
	dead, err := collectDeadLetters(ctx, pool, &r, seqs)
	if err != nil {
		return r, err
	}
	checkStreamGaps(&r, seqs, stream)
	if err := checkItemGaps(ctx, pool, &r, dead); err != nil {
		return r, err
	}
	return r, nil
}

// chainRow is the part of an audit_events row verify reads.
type chainRow struct {
	source                             string
	pos                                int64
	seq                                int64
	receivedAt, observedAt             time.Time
	body, prevHash, hash               []byte
	eventText                          string
	eventID, kind, itemID, state, stat string
	parentID                           *string
	sequence                           int64
}

func verifyChains(ctx context.Context, pool *pgxpool.Pool, r *report, seqs map[uint64]string) error {
	rows, err := pool.Query(ctx, `SELECT source, chain_pos, stream_seq, received_at, observed_at, body, prev_hash, hash,
		event::text, event_id, kind, item_id, state, status, parent_id, sequence
		FROM audit_events ORDER BY source, chain_pos`)
	if err != nil {
		return fmt.Errorf("read audit_events: %w", err)
	}
	defer rows.Close()
	var prev *chainRow
	for rows.Next() {
		var c chainRow
		if err := rows.Scan(&c.source, &c.pos, &c.seq, &c.receivedAt, &c.observedAt, &c.body, &c.prevHash, &c.hash,
			&c.eventText, &c.eventID, &c.kind, &c.itemID, &c.state, &c.stat, &c.parentID, &c.sequence); err != nil {
			return fmt.Errorf("read audit_events: %w", err)
		}
		r.events++
		if _, dup := seqs[uint64(c.seq)]; !dup {
			seqs[uint64(c.seq)] = "audit_events"
		}
		if prev == nil || prev.source != c.source {
			r.chains++
			prev = &chainRow{source: c.source, hash: make([]byte, hashSize)}
		}
		for _, what := range checkLink(*prev, c) {
			r.problems = append(r.problems, problem{"audit_events", c.source, uint64(c.seq), what})
		}
		prev = &c
	}
	return rows.Err()
}

// checkLink lists what is wrong with row c following prev in its chain.
func checkLink(prev, c chainRow) []string {
	var out []string
	if c.pos != prev.pos+1 {
		out = append(out, fmt.Sprintf("chain position %d follows %d: rows are missing before it", c.pos, prev.pos))
	}
	if !bytes.Equal(c.prevHash, prev.hash) {
		out = append(out, fmt.Sprintf("prev_hash does not match the hash of chain position %d: the chain is broken here", prev.pos))
	}
	if !bytes.Equal(c.hash, rowHash(c.prevHash, uint64(c.seq), c.receivedAt, c.body)) {
		out = append(out, "hash does not match the row's body, stream sequence and receive time: the row was changed")
	}
	return append(out, checkColumns(c)...)
}

// checkColumns compares the row's columns and event document with its hashed body.
func checkColumns(c chainRow) []string {
	e, err := event.Decode(c.body)
	if err != nil {
		return []string{"body is not a watcher event: " + err.Error()}
	}
	d := e.Data
	var out []string
	cmp := func(column, got, want string) {
		if got != want {
			out = append(out, fmt.Sprintf("column %s is %q but the hashed body says %q", column, got, want))
		}
	}
	cmp("event_id", c.eventID, e.ID)
	cmp("source", c.source, d.Source)
	cmp("kind", c.kind, d.Kind)
	cmp("item_id", c.itemID, d.ID)
	cmp("state", c.state, d.Current.State)
	cmp("status", c.stat, d.Current.Status)
	cmp("sequence", strconv.FormatInt(c.sequence, 10), strconv.FormatUint(uint64(d.Sequence), 10))
	cmp("observed_at", c.observedAt.UTC().Format(time.RFC3339Nano), d.ObservedAt.UTC().Truncate(time.Microsecond).Format(time.RFC3339Nano))
	cmp("parent_id", deref(c.parentID), deref(d.ParentID))
	var stored, hashed any
	if json.Unmarshal([]byte(c.eventText), &stored) != nil || json.Unmarshal(c.body, &hashed) != nil || !reflect.DeepEqual(stored, hashed) {
		out = append(out, "column event differs from the hashed body")
	}
	return out
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// itemKey names an item: source, kind, parent id, id.
type itemKey struct{ source, kind, parent, id string }

// collectDeadLetters adds the dead letters' stream sequences to seqs and returns,
// per item, the item sequences of the watcher events among them (refused by the
// database or repeated), which explain holes in the item's stored sequences.
func collectDeadLetters(ctx context.Context, pool *pgxpool.Pool, r *report, seqs map[uint64]string) (map[itemKey][]int64, error) {
	rows, err := pool.Query(ctx, "SELECT stream_seq, body FROM audit_dead_letters ORDER BY stream_seq")
	if err != nil {
		return nil, fmt.Errorf("read audit_dead_letters: %w", err)
	}
	defer rows.Close()
	dead := map[itemKey][]int64{}
	for rows.Next() {
		var s int64
		var body []byte
		if err := rows.Scan(&s, &body); err != nil {
			return nil, fmt.Errorf("read audit_dead_letters: %w", err)
		}
		if e, err := event.Decode(body); err == nil {
			k := itemKey{e.Data.Source, e.Data.Kind, deref(e.Data.ParentID), e.Data.ID}
			dead[k] = append(dead[k], int64(e.Data.Sequence))
		}
		r.deadLetters++
		if table, dup := seqs[uint64(s)]; dup {
			r.problems = append(r.problems, problem{"audit_dead_letters", "", uint64(s), "stream sequence also stored in " + table})
			continue
		}
		seqs[uint64(s)] = "audit_dead_letters"
	}
	return dead, rows.Err()
}

// checkStreamGaps reports stream sequences missing from the trail within the range
// both the stream and the trail cover, and notes what lies outside it.
func checkStreamGaps(r *report, seqs map[uint64]string, stream streamRange) {
	if len(seqs) == 0 {
		if stream.last >= stream.first && stream.last > 0 {
			r.notes = append(r.notes, fmt.Sprintf("nothing stored yet; the stream holds sequences %d-%d", stream.first, stream.last))
		}
		return
	}
	all := make([]uint64, 0, len(seqs))
	for s := range seqs {
		all = append(all, s)
	}
	slices.Sort(all)
	lo, hi := max(all[0], stream.first), all[len(all)-1]
	if all[0] < stream.first {
		r.notes = append(r.notes, fmt.Sprintf("stream sequences below %d are no longer in the stream (limits or deletes); the trail keeps them", stream.first))
	}
	if stream.last > hi {
		r.notes = append(r.notes, fmt.Sprintf("stream sequences %d-%d are not stored yet (the consumer is behind)", hi+1, stream.last))
	}
	if hi > stream.last {
		r.problems = append(r.problems, problem{"audit_events", "", hi, fmt.Sprintf("stored stream sequence is beyond the stream's last, %d: another stream, or the stream was recreated", stream.last)})
	}
	var missingFrom uint64
	flush := func(to uint64) {
		if missingFrom == 0 {
			return
		}
		what := fmt.Sprintf("stream sequence %d is missing from the trail", missingFrom)
		if to > missingFrom {
			what = fmt.Sprintf("stream sequences %d-%d are missing from the trail", missingFrom, to)
		}
		r.problems = append(r.problems, problem{"audit_events", "", missingFrom, what})
		missingFrom = 0
	}
	for s := lo; s <= hi; s++ {
		if _, ok := seqs[s]; ok || stream.deleted[s] {
			flush(s - 1)
			continue
		}
		if missingFrom == 0 {
			missingFrom = s
		}
	}
	flush(hi)
}

// checkItemGaps reports items whose stored sequences have holes, naming the stream
// sequence of the row after each hole; a hole made only of dead-lettered
// sequences is a note.
func checkItemGaps(ctx context.Context, pool *pgxpool.Pool, r *report, dead map[itemKey][]int64) error {
	rows, err := pool.Query(ctx, `SELECT source, kind, coalesce(parent_id, ''), item_id,
		array_agg(sequence ORDER BY sequence), array_agg(stream_seq ORDER BY sequence)
		FROM audit_events GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4`)
	if err != nil {
		return fmt.Errorf("read item sequences: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var source, kind, parent, item string
		var seqs, streamSeqs []int64
		if err := rows.Scan(&source, &kind, &parent, &item, &seqs, &streamSeqs); err != nil {
			return fmt.Errorf("read item sequences: %w", err)
		}
		name := kind + " " + item
		if parent != "" {
			name = kind + " " + parent + "/" + item
		}
		deadSeqs := dead[itemKey{source, kind, parent, item}]
		for i := 1; i < len(seqs); i++ {
			if seqs[i] <= seqs[i-1]+1 {
				continue
			}
			p := problem{"audit_events", source, uint64(streamSeqs[i]),
				fmt.Sprintf("%s: item sequences %d-%d are missing before sequence %d", name, seqs[i-1]+1, seqs[i]-1, seqs[i])}
			if allIn(seqs[i-1]+1, seqs[i]-1, deadSeqs) {
				r.notes = append(r.notes, p.String()+" (kept in audit_dead_letters)")
				continue
			}
			r.problems = append(r.problems, p)
		}
	}
	return rows.Err()
}

// print writes the report: one line per problem, then the notes and a summary.
func (r report) print(w io.Writer, stream streamRange) {
	for _, p := range r.problems {
		fmt.Fprintln(w, "FAIL", p)
	}
	for _, n := range r.notes {
		fmt.Fprintln(w, "note:", n)
	}
	verdict := "ok"
	if len(r.problems) > 0 {
		verdict = fmt.Sprintf("%d problems", len(r.problems))
	}
	fmt.Fprintf(w, "%s: %d events in %d chains, %d dead letters; stream sequences %d-%d\n",
		verdict, r.events, r.chains, r.deadLetters, stream.first, stream.last)
}

// allIn reports whether every number from lo to hi is in list.
func allIn(lo, hi int64, list []int64) bool {
	for n := lo; n <= hi; n++ {
		if !slices.Contains(list, n) {
			return false
		}
	}
	return true
}
