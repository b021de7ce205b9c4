package main

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"strconv"
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

const insertSQL = `INSERT INTO watcher_events
	(event_id, source, kind, item_id, parent_id, state, status, sequence, observed_at, created_at, event)
	VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::jsonb)
	ON CONFLICT (event_id) DO NOTHING`

// row is one event ready for insertion; body is the message as received.
type row struct {
	e    event.Event
	body []byte
}

// openDB connects to dsn and creates the schema if it is missing.
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
	if err := createSchema(ctx, pool); err != nil {
		pool.Close()
		return nil, fmt.Errorf("database %s: %w", cfg.ConnConfig.Database, err)
	}
	return pool, nil
}

// createSchema runs schema.sql in one transaction; it is idempotent.
func createSchema(ctx context.Context, pool *pgxpool.Pool) error {
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		// No arguments: the simple protocol, which runs several statements.
		if _, err := tx.Exec(ctx, schemaSQL); err != nil {
			return fmt.Errorf("create schema: %w", err)
		}
		return nil
	})
}

// insertRows inserts rows in one transaction; an event already stored is skipped.
// When it returns nil every row is committed.
func insertRows(ctx context.Context, pool *pgxpool.Pool, rows []row) error {
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		var b pgx.Batch
		for _, r := range rows {
			d := r.e.Data
			var created *time.Time
			if !d.CreatedAt.IsZero() {
				c := d.CreatedAt.UTC()
				created = &c
			}
			b.Queue(insertSQL, r.e.ID, d.Source, d.Kind, d.ID, d.ParentID, d.Current.State, d.Current.Status,
				int64(d.Sequence), d.ObservedAt.UTC(), created, string(r.body))
		}
		br := tx.SendBatch(ctx, &b)
		for _, r := range rows {
			if _, err := br.Exec(); err != nil {
				br.Close()
				return fmt.Errorf("insert event %s: %w", r.e.ID, err)
			}
		}
		return br.Close()
	})
}

// badData reports whether err is the database refusing a row's content, which no
// retry can fix: a data exception (class 22, e.g. a NUL in a JSON string), an
// integrity violation (23) or a program limit (54).
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
