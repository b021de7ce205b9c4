package main

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/payments-watcher/watcher/event"
)

var (
	//go:embed schema.sql
	schemaSQL string
	//go:embed history.sql
	historySQL string
)

// tables are the audit trail's tables, both append-only.
var tables = []string{"audit_events", "audit_dead_letters"}

// chainLock is the advisory lock a batch holds while it extends the chains, so that
// two writers never fork a source's chain.
const chainLock = 7523017719

const insertEventSQL = `INSERT INTO audit_events
	(stream_seq, subject, published_at, received_at, event_id, source, provider, kind, item_id, parent_id,
	 state, status, previous_status, sequence, observed_at, created_at, event, body, chain_pos, prev_hash, hash)
	VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17::jsonb, $18, $19, $20, $21)`

const insertDeadLetterSQL = `INSERT INTO audit_dead_letters
	(stream_seq, subject, published_at, received_at, event_id, reason, body)
	VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (stream_seq) DO NOTHING`

// received is one stream message as audit-trail got it. e is nil when the message
// is not a watcher event; decodeErr then says why.
type received struct {
	seq       uint64
	subject   string
	published time.Time
	at        time.Time // receive time, truncated to PostgreSQL's microseconds
	body      []byte
	e         *event.Event
	decodeErr error
}

// openDB connects to dsn. It neither creates nor checks the schema.
func openDB(ctx context.Context, dsn string) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("database url: %w", err) // the dsn may hold a password: not repeated
	}
	cfg.MaxConns = 2
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("database %s: %w", cfg.ConnConfig.Database, err)
	}
	return pool, nil
}

// setupSchema runs schema.sql and grants writer INSERT and SELECT on the tables,
// in one transaction, as the connected (owner) role. It is idempotent.
func setupSchema(ctx context.Context, pool *pgxpool.Pool, writer string) error {
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		// No arguments: the simple protocol, which runs several statements.
		if _, err := tx.Exec(ctx, schemaSQL); err != nil {
			return fmt.Errorf("create schema: %w", err)
		}
		w := pgx.Identifier{writer}.Sanitize()
		grant := "GRANT INSERT, SELECT ON audit_events, audit_dead_letters TO " + w
		if _, err := tx.Exec(ctx, grant); err != nil {
			return fmt.Errorf("grant to writer %s: %w", writer, err)
		}
		return nil
	})
}

// checkWriter fails unless both tables exist and the connected role may not
// UPDATE, DELETE or TRUNCATE them: the writer must not be able to rewrite history.
func checkWriter(ctx context.Context, pool *pgxpool.Pool) error {
	var role string
	if err := pool.QueryRow(ctx, "SELECT current_user").Scan(&role); err != nil {
		return err
	}
	for _, table := range tables {
		var exists bool
		if err := pool.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", table).Scan(&exists); err != nil {
			return err
		}
		if !exists {
			return fmt.Errorf("table %s does not exist: run `audit-trail setup --dsn OWNER_DSN --writer %s` first", table, role)
		}
		for _, priv := range []string{"INSERT", "UPDATE", "DELETE", "TRUNCATE"} {
			var has bool
			if err := pool.QueryRow(ctx, "SELECT has_table_privilege($1, $2)", table, priv).Scan(&has); err != nil {
				return err
			}
			if priv == "INSERT" && !has {
				return fmt.Errorf("role %s may not INSERT into %s: run `audit-trail setup --writer %s` as the owner", role, table, role)
			}
			if priv != "INSERT" && has {
				return fmt.Errorf("role %s may %s %s: run audit-trail as a writer role granted only INSERT and SELECT (see `audit-trail setup`), not as the owner", role, priv, table)
			}
		}
	}
	return nil
}

// storeBatch stores recs in one transaction: each new watcher event as the next
// link of its source's chain, everything else as a dead letter with the reason.
// Messages whose stream sequence is already stored (a redelivery) are skipped. An
// error leaves nothing of the batch stored; the caller retries it.
func storeBatch(ctx context.Context, pool *pgxpool.Pool, recs []received) (events, dead int, err error) {
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		events, dead = 0, 0
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", int64(chainLock)); err != nil {
			return err
		}
		known, err := storedSeqs(ctx, tx, recs)
		if err != nil {
			return err
		}
		ids, err := storedEventIDs(ctx, tx, recs)
		if err != nil {
			return err
		}
		heads := map[string]chainHead{}
		for _, r := range recs {
			if known[r.seq] {
				continue
			}
			known[r.seq] = true
			reason := ""
			switch {
			case r.e == nil:
				reason = "not a watcher event: " + r.decodeErr.Error()
			case ids[r.e.ID] != 0:
				reason = "duplicate of the event stored at stream sequence " + strconv.FormatUint(ids[r.e.ID], 10)
			default:
				head, err := loadHead(ctx, tx, heads, r.e.Data.Source)
				if err != nil {
					return err
				}
				next, err := insertEvent(ctx, tx, r, head)
				if badData(err) {
					reason = "refused by the database: " + err.Error()
					break
				}
				if err != nil {
					return err
				}
				heads[r.e.Data.Source], ids[r.e.ID] = next, r.seq
				events++
				continue
			}
			if err := insertDeadLetter(ctx, tx, r, reason); err != nil {
				return err
			}
			dead++
		}
		return nil
	})
	return events, dead, err
}

// storedSeqs are the stream sequences of recs already in either table.
func storedSeqs(ctx context.Context, tx pgx.Tx, recs []received) (map[uint64]bool, error) {
	seqs := make([]int64, len(recs))
	for i, r := range recs {
		seqs[i] = int64(r.seq)
	}
	rows, err := tx.Query(ctx, `SELECT stream_seq FROM audit_events WHERE stream_seq = ANY($1)
		UNION ALL SELECT stream_seq FROM audit_dead_letters WHERE stream_seq = ANY($1)`, seqs)
	if err != nil {
		return nil, err
	}
	list, err := collect[int64](rows)
	known := map[uint64]bool{}
	for _, s := range list {
		known[uint64(s)] = true
	}
	return known, err
}

// storedEventIDs maps the ids of recs' events already stored to their stream
// sequence.
func storedEventIDs(ctx context.Context, tx pgx.Tx, recs []received) (map[string]uint64, error) {
	var ids []string
	for _, r := range recs {
		if r.e != nil {
			ids = append(ids, cleanText(r.e.ID))
		}
	}
	out := map[string]uint64{}
	rows, err := tx.Query(ctx, "SELECT event_id, stream_seq FROM audit_events WHERE event_id = ANY($1)", ids)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var seq int64
		if err := rows.Scan(&id, &seq); err != nil {
			return nil, err
		}
		out[id] = uint64(seq)
	}
	return out, rows.Err()
}

// collect scans rows of one column and closes them.
func collect[T any](rows pgx.Rows) ([]T, error) {
	defer rows.Close()
	var out []T
	for rows.Next() {
		var v T
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// chainHead is the last link of a source's chain: its position and hash.
type chainHead struct {
	pos  int64
	hash []byte
}

// loadHead returns source's chain head, from heads or else from the table (the
// zero head, position 0 and a zero hash, for a new chain).
func loadHead(ctx context.Context, tx pgx.Tx, heads map[string]chainHead, source string) (chainHead, error) {
	if h, ok := heads[source]; ok {
		return h, nil
	}
	h := chainHead{hash: make([]byte, hashSize)}
	err := tx.QueryRow(ctx, "SELECT chain_pos, hash FROM audit_events WHERE source = $1 ORDER BY chain_pos DESC LIMIT 1", source).
		Scan(&h.pos, &h.hash)
	if errors.Is(err, pgx.ErrNoRows) {
		err = nil
	}
	return h, err
}

// insertEvent inserts r as the link after head, inside a savepoint so that a
// refused row leaves the batch's transaction usable, and returns the new head.
func insertEvent(ctx context.Context, tx pgx.Tx, r received, head chainHead) (chainHead, error) {
	d := r.e.Data
	hash := rowHash(head.hash, r.seq, r.at, r.body)
	var parent, previous *string
	if d.ParentID != nil {
		parent = nullIfEmpty(*d.ParentID)
	}
	if d.Previous != nil {
		previous = &d.Previous.Status
	}
	sp, err := tx.Begin(ctx)
	if err != nil {
		return head, err
	}
	_, err = sp.Exec(ctx, insertEventSQL, int64(r.seq), r.subject, r.published, r.at, nullIfEmpty(r.e.ID),
		nullIfEmpty(d.Source), nullIfEmpty(d.Provider), nullIfEmpty(d.Kind), nullIfEmpty(d.ID), parent,
		nullIfEmpty(d.Current.State), nullIfEmpty(d.Current.Status), previous, int64(d.Sequence),
		nullIfZero(d.ObservedAt), nullIfZero(d.CreatedAt), string(r.body), r.body, head.pos+1, head.hash, hash)
	if err != nil {
		_ = sp.Rollback(ctx)
		return head, err
	}
	if err := sp.Commit(ctx); err != nil {
		return head, err
	}
	return chainHead{pos: head.pos + 1, hash: hash}, nil
}

// insertDeadLetter keeps r in audit_dead_letters with reason.
func insertDeadLetter(ctx context.Context, tx pgx.Tx, r received, reason string) error {
	var id *string
	if r.e != nil {
		id = nullIfEmpty(cleanText(r.e.ID))
	}
	_, err := tx.Exec(ctx, insertDeadLetterSQL, int64(r.seq), cleanText(r.subject), r.published, r.at, id, cleanText(reason), r.body)
	if err != nil {
		return fmt.Errorf("dead letter of stream sequence %d: %w", r.seq, err)
	}
	return nil
}

// nullIfEmpty is nil for "", so that a NOT NULL column refuses a missing field.
func nullIfEmpty(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func nullIfZero(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}

// cleanText makes s storable as text: valid UTF-8 without NUL.
func cleanText(s string) string {
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
}

// badData reports whether err is the database refusing a row's content, which no
// retry can fix: a data exception (class 22, e.g. a NUL in a JSON string), an
// integrity violation (23, e.g. a field the contract requires is missing) or a
// program limit (54).
func badData(err error) bool {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || len(pe.Code) < 2 {
		return false
	}
	switch pe.Code[:2] {
	case "22", "23", "54":
		return true
	}
	return false
}

// printHistory writes the history of source's item id (history.sql) as a table. It
// is an error when no event of the item is stored.
func printHistory(ctx context.Context, pool *pgxpool.Pool, source, id string, w io.Writer) error {
	rows, err := pool.Query(ctx, historySQL, source, id)
	if err != nil {
		return fmt.Errorf("history of %s %s: %w", source, id, err)
	}
	defer rows.Close()
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "OBSERVED_AT\tKIND\tID\tSEQ\tPREVIOUS\tSTATUS\tSTATE\tEVENT_ID")
	n := 0
	for rows.Next() {
		var (
			kind, itemID, status, state, eventID string
			parentID, previous                   *string
			seq                                  int64
			observed                             time.Time
		)
		if err := rows.Scan(&kind, &itemID, &parentID, &seq, &previous, &status, &state, &observed, &eventID); err != nil {
			return fmt.Errorf("history of %s %s: %w", source, id, err)
		}
		if parentID != nil {
			itemID = *parentID + "/" + itemID
		}
		prev := "(new)"
		if previous != nil {
			prev = *previous
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", observed.UTC().Format(time.RFC3339Nano), kind, itemID,
			strconv.FormatInt(seq, 10), prev, status, state, eventID)
		n++
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("history of %s %s: %w", source, id, err)
	}
	if n == 0 {
		return fmt.Errorf("history of %s %s: no events stored", source, id)
	}
	return tw.Flush()
}
