package pipeline

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	bolt "go.etcd.io/bbolt"

	"github.com/payments-watcher/watcher/event"
	"github.com/payments-watcher/watcher/publish"
)

// recordSize is the size of the value the raw measurements write for a snapshot
// record: about what state's codec makes of a payment without nested items.
const recordSize = 48

// ackTimeout bounds the wait for one window's acknowledgements in the raw loops.
const ackTimeout = 30 * time.Second

// rawWindow is how many publishes rawPublish keeps awaiting their acknowledgement.
const rawWindow = 1024

// rawPublish publishes n messages of body to a new file-storage stream (as
// publish.EnsureStream makes it), asynchronously, each with its own Nats-Msg-Id, and
// waits for every acknowledgement. A sliding window of rawWindow unacknowledged
// publishes paces it.
func rawPublish(ctx context.Context, js jetstream.JetStream, cfg publish.Config, n int, body []byte) (Figures, error) {
	if _, err := publish.EnsureStream(ctx, js, cfg); err != nil {
		return Figures{}, err
	}
	defer deleteStream(js, cfg.Stream)
	subject := event.Subject(cfg.SubjectPrefix, "raw", "payment", "processing")
	futures := make([]jetstream.PubAckFuture, 0, n)
	m := startMeter()
	for i := range n {
		if i >= rawWindow {
			if err := awaitAcks(ctx, futures[i-rawWindow:i-rawWindow+1]); err != nil {
				return Figures{}, err
			}
		}
		msg := &nats.Msg{Subject: subject, Data: body, Header: nats.Header{"Content-Type": []string{event.ContentType}}}
		f, err := js.PublishMsgAsync(msg, jetstream.WithMsgID("raw-"+strconv.Itoa(i)))
		if err != nil {
			return Figures{}, fmt.Errorf("publish %d: %w", i, err)
		}
		futures = append(futures, f)
	}
	if err := awaitAcks(ctx, futures[max(0, n-rawWindow):]); err != nil {
		return Figures{}, err
	}
	f := Figures{Items: n, Transitions: n}
	m.finish(&f)
	return f, nil
}

// awaitAcks waits for every future's acknowledgement.
func awaitAcks(ctx context.Context, futures []jetstream.PubAckFuture) error {
	timer := time.NewTimer(ackTimeout)
	defer timer.Stop()
	for i, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return fmt.Errorf("publish %d: %w", i, err)
		case <-timer.C:
			return fmt.Errorf("publish %d: no acknowledgement within %s", i, ackTimeout)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

func deleteStream(js jetstream.JetStream, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = js.DeleteStream(ctx, name)
}

// boltFile is a bbolt file laid out as the raw measurements need it: a bucket of
// snapshot-sized values under the items' ids, and an outbox.
type boltFile struct {
	db   *bolt.DB
	keys [][]byte
}

var (
	rawItems  = []byte("items")
	rawOutbox = []byte("outbox")
)

// openBolt creates a bbolt file at path with the options of the state back end's Open
// (package state/bbolt: fsync on every commit) holding a record of recordSize bytes
// for every id.
func openBolt(path string, ids []string) (*boltFile, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{FreelistType: bolt.FreelistMapType, NoFreelistSync: true})
	if err != nil {
		return nil, fmt.Errorf("bbolt %s: %w", path, err)
	}
	f := &boltFile{db: db, keys: make([][]byte, len(ids))}
	for i, id := range ids {
		f.keys[i] = []byte(id)
	}
	value := make([]byte, recordSize)
	const fill = 10000
	for from := 0; from < len(f.keys); from += fill {
		err := db.Update(func(tx *bolt.Tx) error {
			items, err := tx.CreateBucketIfNotExists(rawItems)
			if err != nil {
				return err
			}
			if _, err := tx.CreateBucketIfNotExists(rawOutbox); err != nil {
				return err
			}
			for _, k := range f.keys[from:min(from+fill, len(f.keys))] {
				if err := items.Put(k, value); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			_ = db.Close()
			return nil, fmt.Errorf("bbolt %s: fill: %w", path, err)
		}
	}
	return f, nil
}

func (f *boltFile) close() error { return f.db.Close() }

// put stores value under each of keys and appends each of bodies to the outbox, in one
// transaction; it returns the outbox sequence numbers.
func (f *boltFile) put(keys [][]byte, value []byte, bodies [][]byte) ([]uint64, error) {
	seqs := make([]uint64, 0, len(bodies))
	err := f.db.Update(func(tx *bolt.Tx) error {
		items, outbox := tx.Bucket(rawItems), tx.Bucket(rawOutbox)
		outbox.FillPercent = 0.9
		for _, k := range keys {
			if err := items.Put(k, value); err != nil {
				return err
			}
		}
		for _, b := range bodies {
			seq, err := outbox.NextSequence()
			if err != nil {
				return err
			}
			if err := outbox.Put(binary.BigEndian.AppendUint64(nil, seq), b); err != nil {
				return err
			}
			seqs = append(seqs, seq)
		}
		return nil
	})
	return seqs, err
}

// delete removes outbox entries in one transaction.
func (f *boltFile) delete(seqs []uint64) error {
	return f.db.Update(func(tx *bolt.Tx) error {
		outbox := tx.Bucket(rawOutbox)
		var k [8]byte
		for _, s := range seqs {
			binary.BigEndian.PutUint64(k[:], s)
			if err := outbox.Delete(k[:]); err != nil {
				return err
			}
		}
		return nil
	})
}

// changedKeys returns the keys of page p that a round changing share of them writes:
// every tenth item of a page for a share of 0.1.
func changedKeys(keys [][]byte, from, to int, every int) [][]byte {
	var out [][]byte
	for i := from; i < to; i++ {
		if i%every == 0 {
			out = append(out, keys[i])
		}
	}
	return out
}

// rawBolt writes page after page in one transaction each: for every item of the page
// that changed, its snapshot value and one outbox entry of body. Nothing is read,
// published or deleted.
func rawBolt(f *boltFile, pageSize, every int, body []byte) (Figures, error) {
	value := make([]byte, recordSize)
	out := Figures{}
	m := startMeter()
	for from := 0; from < len(f.keys); from += pageSize {
		to := min(from+pageSize, len(f.keys))
		keys := changedKeys(f.keys, from, to, every)
		bodies := make([][]byte, len(keys))
		for i := range bodies {
			bodies[i] = body
		}
		if _, err := f.put(keys, value, bodies); err != nil {
			return Figures{}, fmt.Errorf("bbolt commit: %w", err)
		}
		out.Items += to - from
		out.Transitions += len(keys)
		out.Commits++
	}
	m.finish(&out)
	return out, nil
}

// minimalLoop does only what delivering the transitions needs, page by page: one
// transaction storing each changed item's snapshot value and its outbox entry; an
// asynchronous publish of those entries with their Nats-Msg-Id; once every
// acknowledgement of the page arrived, one transaction deleting its entries. Commits,
// publishing and deleting run in goroutines of their own, and publishing goes on
// while earlier pages await their acknowledgements (up to rawWindow messages), so that
// each part waits for nothing but its own work. No HTTP, no parsing, no comparison, no
// encoding.
func minimalLoop(ctx context.Context, js jetstream.JetStream, cfg publish.Config, f *boltFile, pageSize, every int, body []byte, round string) (Figures, error) {
	if _, err := publish.EnsureStream(ctx, js, cfg); err != nil {
		return Figures{}, err
	}
	defer deleteStream(js, cfg.Stream)
	subject := event.Subject(cfg.SubjectPrefix, "min", "payment", "processing")
	value := make([]byte, recordSize)
	type page struct {
		seqs    []uint64
		ids     []string
		futures []jetstream.PubAckFuture
	}
	committed := make(chan page, len(f.keys)/pageSize+1)
	inFlight := make(chan page, max(1, rawWindow/pageSize))
	published, deleted := make(chan error, 1), make(chan error, 1)
	out := Figures{}
	m := startMeter()
	go func() {
		defer close(inFlight)
		published <- func() error {
			for p := range committed {
				p.futures = make([]jetstream.PubAckFuture, len(p.ids))
				for i, id := range p.ids {
					msg := &nats.Msg{Subject: subject, Data: body, Header: nats.Header{"Content-Type": []string{event.ContentType}}}
					var err error
					if p.futures[i], err = js.PublishMsgAsync(msg, jetstream.WithMsgID(id)); err != nil {
						return fmt.Errorf("publish %s: %w", id, err)
					}
				}
				select {
				case inFlight <- p:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			return nil
		}()
	}()
	go func() {
		deleted <- func() error {
			for p := range inFlight {
				if err := awaitAcks(ctx, p.futures); err != nil {
					return err
				}
				if err := f.delete(p.seqs); err != nil {
					return fmt.Errorf("bbolt delete: %w", err)
				}
			}
			return nil
		}()
		for range inFlight { // after a failure, let the publisher finish
		}
	}()
	var commitErr error
	for from := 0; from < len(f.keys); from += pageSize {
		to := min(from+pageSize, len(f.keys))
		keys := changedKeys(f.keys, from, to, every)
		bodies := make([][]byte, len(keys))
		ids := make([]string, len(keys))
		for i, k := range keys {
			bodies[i] = body
			ids[i] = round + "-" + string(k)
		}
		seqs, err := f.put(keys, value, bodies)
		if err != nil {
			commitErr = fmt.Errorf("bbolt commit: %w", err)
			break
		}
		committed <- page{seqs: seqs, ids: ids}
		out.Items += to - from
		out.Transitions += len(keys)
	}
	close(committed)
	if err := errors.Join(commitErr, <-published, <-deleted); err != nil {
		return Figures{}, err
	}
	m.finish(&out)
	return out, nil
}
