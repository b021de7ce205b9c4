package natskv

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/klauspost/compress/s2"
	"github.com/nats-io/nats.go/jetstream"
)

// A source's journal key holds the batch a Commit is applying, or nothing. Writing it
// is the point at which a Commit takes effect: it is revision-checked against the
// journal revision the Store read when its view of the source began (Meta, or the
// first Load), so two writers of one source are serialised there, and a writer whose
// view is stale writes nothing at all. Once it is written, the batch is applied
// (outbox, open index, records, metadata) and the journal cleared. A batch whose
// application was cut short (a crash, a lost connection, a cancelled ctx) stays in the
// journal, and the next Meta of the source, on this replica or the one that takes the
// source over, applies it before anything else reads the source: so an item's record
// never stays behind an event already in the outbox, and the next cycle computes its
// transitions from the record that event left.
const (
	journalClear   byte = 0
	journalPending byte = 1
	journalFormat  byte = 1
)

// maxJournal bounds the compressed batch a journal key holds: below NATS's default
// max payload of 1 MiB, with room for the message's headers.
const maxJournal = 960 << 10

// batch is what a Commit writes, encoded: the outbox entries with their event ids, the
// records with their open index entries, and the metadata (nil: unchanged).
type batch struct {
	ids     []string
	entries [][]byte
	recs    []encoded
	meta    []byte
	// metaKey is the metadata's key (the source's); set with meta.
	metaKey string
}

// encodeJournal writes b as a pending journal value: a state byte, then the batch in
// s2 compression. It fails when the result exceeds maxJournal.
func encodeJournal(b *batch) ([]byte, error) {
	raw := []byte{journalFormat}
	raw = binary.AppendUvarint(raw, uint64(len(b.entries)))
	for i := range b.entries {
		raw = appendBytes(raw, []byte(b.ids[i]))
		raw = appendBytes(raw, b.entries[i])
	}
	raw = binary.AppendUvarint(raw, uint64(len(b.recs)))
	for _, r := range b.recs {
		raw = appendBytes(raw, []byte(r.key))
		raw = appendBytes(raw, r.value)
		if r.open {
			raw = append(raw, 1)
			raw = appendBytes(raw, r.openItem)
		} else {
			raw = append(raw, 0)
		}
	}
	raw = appendBytes(raw, []byte(b.metaKey))
	raw = appendBytes(raw, b.meta)
	out := append([]byte{journalPending}, s2.Encode(nil, raw)...)
	if len(out) > maxJournal {
		return nil, fmt.Errorf("the page's %d records and %d events take %d bytes compressed, more than one commit "+
			"can hold (%d); lower the source's page_size", len(b.recs), len(b.entries), len(out), maxJournal)
	}
	return out, nil
}

func appendBytes(dst, b []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(b)))
	return append(dst, b...)
}

// decodeJournal reads a journal value: nil for a clear journal, else the pending batch.
func decodeJournal(v []byte) (*batch, error) {
	if len(v) == 0 || v[0] == journalClear {
		return nil, nil
	}
	if v[0] != journalPending {
		return nil, fmt.Errorf("journal: unknown state %d", v[0])
	}
	raw, err := s2.Decode(nil, v[1:])
	if err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	d := journalReader{b: raw}
	if f := d.byte(); f != journalFormat {
		return nil, fmt.Errorf("journal: unknown format %d", f)
	}
	b := &batch{}
	for n := d.count(); n > 0 && d.err == nil; n-- {
		b.ids = append(b.ids, string(d.bytes()))
		b.entries = append(b.entries, d.bytes())
	}
	for n := d.count(); n > 0 && d.err == nil; n-- {
		r := encoded{key: string(d.bytes()), value: d.bytes()}
		if d.byte() == 1 {
			r.open, r.openItem = true, d.bytes()
		}
		b.recs = append(b.recs, r)
	}
	b.metaKey = string(d.bytes())
	if m := d.bytes(); len(m) > 0 {
		b.meta = m
	}
	if d.err == nil && len(d.b) > 0 {
		d.err = errors.New("trailing bytes")
	}
	if d.err != nil {
		return nil, fmt.Errorf("journal: %w", d.err)
	}
	return b, nil
}

// journalReader reads the fields encodeJournal wrote; the first error sticks.
type journalReader struct {
	b   []byte
	err error
}

var errShortJournal = errors.New("truncated")

func (d *journalReader) count() uint64 {
	if d.err != nil {
		return 0
	}
	n, k := binary.Uvarint(d.b)
	if k <= 0 || n > uint64(len(d.b)) {
		d.err = errShortJournal
		return 0
	}
	d.b = d.b[k:]
	return n
}

func (d *journalReader) bytes() []byte {
	n := d.count()
	if d.err != nil || n > uint64(len(d.b)) {
		d.err = errShortJournal
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *journalReader) byte() byte {
	if d.err != nil || len(d.b) == 0 {
		d.err = errShortJournal
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

// journalRev returns the journal revision remembered for source and whether one is.
func (s *Store) journalRev(source string) (uint64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rev, ok := s.journals[source]
	return rev, ok
}

func (s *Store) rememberJournal(source string, rev uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.journals[source] = rev
}

// recoverSource reads source's journal, applies a batch left pending there and clears
// it, and remembers the journal's revision as the start of this Store's view of the
// source.
func (s *Store) recoverSource(ctx context.Context, source string) error {
	key := sourceKey(source)
	e, err := s.journal.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		s.rememberJournal(source, 0)
		return nil
	}
	if err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	b, err := decodeJournal(e.Value())
	if err != nil {
		return err
	}
	if b == nil {
		s.rememberJournal(source, e.Revision())
		return nil
	}
	// The journal's revision chain admits no other writer of the source meanwhile, so
	// the batch is applied without the records' revision checks.
	if err := s.apply(ctx, b, false); err != nil {
		return fmt.Errorf("applying the commit left pending: %w", err)
	}
	rev, err := s.journal.Update(ctx, key, []byte{journalClear}, e.Revision())
	if err != nil {
		return s.journalErr(err, e.Revision())
	}
	s.rememberJournal(source, rev)
	return nil
}

// readJournal begins a view of source for a Commit that no Meta or Load began: a
// poller's Store completes a pending commit first (recoverSource); a Reader's fails
// with ErrConflict while one is pending, since it belongs to the source's poller.
func (s *Store) readJournal(ctx context.Context, source string) error {
	if !s.opt.Reader {
		return s.recoverSource(ctx, source)
	}
	e, err := s.journal.Get(ctx, sourceKey(source))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		s.rememberJournal(source, 0)
		return nil
	}
	if err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	if b, err := decodeJournal(e.Value()); err != nil {
		return err
	} else if b != nil {
		return fmt.Errorf("%w: a commit of the source's poller is in progress; try again", ErrConflict)
	}
	s.rememberJournal(source, e.Revision())
	return nil
}

// writeJournal makes b take effect for source: it stores b in the journal if the
// journal still has the revision this Store's view began at, and returns the new
// revision.
func (s *Store) writeJournal(ctx context.Context, source string, b *batch) (uint64, error) {
	if _, known := s.journalRev(source); !known {
		if err := s.readJournal(ctx, source); err != nil {
			return 0, err
		}
	}
	v, err := encodeJournal(b)
	if err != nil {
		return 0, err
	}
	want, _ := s.journalRev(source)
	var rev uint64
	if want == 0 {
		rev, err = s.journal.Create(ctx, sourceKey(source), v)
	} else {
		rev, err = s.journal.Update(ctx, sourceKey(source), v, want)
	}
	if err != nil {
		// A view that lost is over: the next Load or Meta begins a new one.
		s.forgetJournal(source)
		return 0, s.journalErr(err, want)
	}
	return rev, nil
}

func (s *Store) forgetJournal(source string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.journals, source)
}

// clearJournal marks source's journal applied, if it still has revision rev.
func (s *Store) clearJournal(ctx context.Context, source string, rev uint64) error {
	next, err := s.journal.Update(ctx, sourceKey(source), []byte{journalClear}, rev)
	if err != nil {
		return s.journalErr(err, rev)
	}
	s.rememberJournal(source, next)
	return nil
}

// journalErr turns a failed revision check of the journal into ErrConflict.
func (s *Store) journalErr(err error, want uint64) error {
	if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return fmt.Errorf("%w: journal (expected revision %d): another writer committed to the source", ErrConflict, want)
	}
	return fmt.Errorf("journal: %w", err)
}
