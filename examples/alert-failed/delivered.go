package main

import (
	"encoding/binary"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

var deliveredBucket = []byte("delivered")

// delivered records the event ids whose alert a webhook accepted, with the time of
// delivery. Entries older than the retention are pruned; the retention must exceed
// how long JetStream may still redeliver an event (its ack wait times the redeliveries
// a crash loop can cause), which a few days cover with room to spare.
type delivered struct {
	db        *bolt.DB
	path      string
	retention time.Duration
	lastPrune time.Time
	now       func() time.Time
}

// openDelivered opens or creates the record at path and prunes expired entries.
func openDelivered(path string, retention time.Duration) (*delivered, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		return nil, fmt.Errorf("state file %s: %w", path, err)
	}
	d := &delivered{db: db, path: path, retention: retention, now: time.Now}
	err = db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(deliveredBucket)
		return err
	})
	if err == nil {
		err = d.prune()
	}
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("state file %s: %w", path, err)
	}
	return d, nil
}

// Close closes the file.
func (d *delivered) Close() error { return d.db.Close() }

// Has reports whether the alert of event id was delivered.
func (d *delivered) Has(id string) (bool, error) {
	var ok bool
	err := d.db.View(func(tx *bolt.Tx) error {
		ok = tx.Bucket(deliveredBucket).Get([]byte(id)) != nil
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("state file %s: read %s: %w", d.path, id, err)
	}
	return ok, nil
}

// Add records that the alert of event id was delivered; it is durable when Add
// returns. Once an hour it also prunes expired entries.
func (d *delivered) Add(id string) error {
	now := d.now().UTC()
	var v [8]byte
	binary.BigEndian.PutUint64(v[:], uint64(now.UnixNano()))
	err := d.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(deliveredBucket).Put([]byte(id), v[:])
	})
	if err != nil {
		return fmt.Errorf("state file %s: record %s: %w", d.path, id, err)
	}
	if now.Sub(d.lastPrune) >= time.Hour {
		if err := d.prune(); err != nil {
			return fmt.Errorf("state file %s: %w", d.path, err)
		}
	}
	return nil
}

// prune deletes the entries delivered more than the retention ago.
func (d *delivered) prune() error {
	now := d.now().UTC()
	cutoff := uint64(now.Add(-d.retention).UnixNano())
	err := d.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(deliveredBucket)
		var old [][]byte
		err := b.ForEach(func(k, v []byte) error {
			if len(v) != 8 || binary.BigEndian.Uint64(v) < cutoff {
				old = append(old, append([]byte(nil), k...))
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, k := range old {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("prune: %w", err)
	}
	d.lastPrune = now
	return nil
}
