package sim

import (
	"math"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync/atomic"
	"time"
)

// machine is one provider's item lifecycle. Its methods run with the simulator's lock
// held. A machine looks only at an item's current state to decide its next change, so
// it also continues sensibly from a status forced through the admin API.
type machine interface {
	// kind is the top-level item kind ("payment").
	kind() string
	// statuses lists the top-level raw statuses the machine can set (the documented
	// ones, and for ramp sessions those of Quirks.UnknownStatuses); an item's status
	// byte indexes it.
	statuses() []string
	// kidKind and kidStatus name a nested object's kind and raw status.
	kidKind(k uint8) string
	kidStatus(k, status uint8) string
	// addendum is the item's status addendum ("" for providers without one).
	addendum(it *item) string
	// create initialises the item just appended at seq: status is the requested initial
	// status index, or -1 to let the machine choose. It records the item's appearance
	// and returns the due time of its first step (0 for none).
	create(e *env, seq int, at int64, status int) int64
	// step makes the item's next change at time at and returns the due time of the
	// following one, 0 when nothing more will happen to the item.
	step(e *env, seq int, at int64) int64
}

// prov is one simulated provider: its items, machine, API and faults.
type prov struct {
	s   *Sim
	idx int
	id  string
	m   machine
	st  store
	// precision is the granularity (ms) at which creation times are kept and rendered.
	precision   int64
	arrival     int64 // due time of the next Rate arrival
	lastCreated int64
	itemID      func(seq int) string
	decodeID    func(id string) (uint64, bool)
	// nestedID, when set, is the id of a nested object as the provider shows it, in
	// place of the kidID uuid.
	nestedID func(seq, idx int) string
	kidCodec uuidCodec
	api      interface{ routes(*http.ServeMux) }
	// render is the item as the provider's API shows it; the caller holds s.mu.
	render func(seq int) any
	faults faultState
	quirks quirkState
	// hook sends the provider's webhooks; nil when it has no target.
	hook *hookSender
}

func newProv(s *Sim, idx int, id string) *prov {
	p := &prov{s: s, idx: idx, id: id, precision: 1}
	key := mix64(s.seed ^ uint64(idx+1)*golden)
	uc := uuidCodec{key: key, check: mix64(key ^ 0xc4ec)}
	p.itemID = func(seq int) string { return uc.encode(uint64(seq)) }
	p.decodeID = uc.decode
	p.kidCodec = uuidCodec{key: mix64(key ^ 0x6b1d), check: mix64(key ^ 0x6b1e)}
	p.faults.rng = rand.New(rand.NewPCG(s.seed, 0xfa17+uint64(idx)))
	simulatedProviders[idx].setup(p, key)
	return p
}

// lookup returns the sequence number of the item with id; the caller holds s.mu.
func (p *prov) lookup(id string) (int, bool) {
	n, ok := p.decodeID(id)
	if !ok || n >= uint64(len(p.st.items)) {
		return 0, false
	}
	return int(n), true
}

// kidID is the id of a nested object (uuid), from its parent and index.
func (p *prov) kidID(seq, idx int) string {
	return p.kidCodec.encode(uint64(seq)<<8 | uint64(idx))
}

// derive returns the stream of an item's fixed fields; salt separates independent
// streams of one item (its nested objects).
func (p *prov) derive(seq int, salt uint64) deriver {
	return deriver{x: mix64(p.s.seed ^ mix64(uint64(p.idx+1)<<40^uint64(seq)) ^ salt*golden)}
}

// newItem appends an item created at (about) at and returns its sequence number.
// Creation times never decrease along the store.
func (s *Sim) newItem(p *prov, at int64) int {
	created := at - at%p.precision
	created = max(created, p.lastCreated)
	p.lastCreated = created
	p.st.items = append(p.st.items, item{created: created, updated: created})
	return len(p.st.items) - 1
}

// event is a heap entry: an item's next step, or (seq -1) a provider's next arrival.
type event struct {
	due  int64
	seq  int32
	prov uint8
}

func (a event) before(b event) bool {
	if a.due != b.due {
		return a.due < b.due
	}
	if a.prov != b.prov {
		return a.prov < b.prov
	}
	return a.seq < b.seq
}

// eventHeap is a binary min-heap ordered by (due, provider, seq), which makes the
// processing order, and so the truth, independent of how Step calls are spaced.
type eventHeap []event

func (h *eventHeap) push(e event) {
	*h = append(*h, e)
	a := *h
	for i := len(a) - 1; i > 0; {
		parent := (i - 1) / 2
		if !a[i].before(a[parent]) {
			break
		}
		a[i], a[parent] = a[parent], a[i]
		i = parent
	}
}

func (h *eventHeap) pop() event {
	a := *h
	top := a[0]
	last := len(a) - 1
	a[0] = a[last]
	a = a[:last]
	for i := 0; ; {
		l, r, m := 2*i+1, 2*i+2, i
		if l < len(a) && a[l].before(a[m]) {
			m = l
		}
		if r < len(a) && a[r].before(a[m]) {
			m = r
		}
		if m == i {
			break
		}
		a[i], a[m] = a[m], a[i]
		i = m
	}
	*h = a
	return top
}

// env is what a machine changes an item through: it keeps the derived state (updated
// time) and the truth in step with every change.
type env struct {
	s      *Sim
	p      *prov
	rng    *rand.Rand
	record bool
	// buffer collects transitions in pending instead of adding them to the truth, so
	// that a step can be undone.
	buffer  bool
	pending []Transition
}

func (s *Sim) liveEnv(p *prov) env {
	return env{s: s, p: p, rng: s.rng, record: true}
}

func (e *env) item(seq int) *item { return &e.p.st.items[seq] }

func (e *env) kids(seq int) []kid { return e.p.st.kidsOf(e.item(seq)) }

func (e *env) chance(p float64) bool { return e.rng.Float64() < p }

// failing reports whether a failure branch of weight w is taken.
func (e *env) failing(w float64) bool { return e.chance(e.s.cfg.FailureRate * w) }

// after returns at plus a delay drawn from Config.Delays, scaled by mult.
func (e *env) after(at int64, mult float64) int64 {
	d := e.s.delays
	v := e.rng.ExpFloat64() * float64(d.Mean) * mult
	v = math.Min(math.Max(v, float64(d.Min)*mult), float64(d.Max)*mult)
	return at + max(int64(v/float64(time.Millisecond)), 1)
}

func (e *env) transition(kind, id, parent, from, to, fromAdd, toAdd string, at int64) {
	if !e.record {
		return
	}
	t := Transition{
		Provider: e.p.id, Kind: kind, ID: id, ParentID: parent, From: from, To: to,
		FromAddendum: fromAdd, ToAddendum: toAdd, At: time.UnixMilli(at).UTC(),
	}
	if e.buffer {
		e.pending = append(e.pending, t)
		return
	}
	e.s.truth.add(t)
}

// appeared records a new top-level item in its current status.
func (e *env) appeared(seq int) {
	if !e.record {
		return
	}
	it := e.item(seq)
	e.transition(e.p.m.kind(), e.p.itemID(seq), "", "", e.p.m.statuses()[it.status], "", e.p.m.addendum(it), it.created)
}

// change applies f to the item at time at and records the change of its status or
// addendum, if any.
func (e *env) change(seq int, at int64, f func(it *item)) {
	it := e.item(seq)
	from, fromAdd := it.status, e.p.m.addendum(it)
	f(it)
	it.updated = at
	if !e.record {
		return
	}
	if to, toAdd := it.status, e.p.m.addendum(it); to != from || toAdd != fromAdd {
		st := e.p.m.statuses()
		e.transition(e.p.m.kind(), e.p.itemID(seq), "", st[from], st[to], fromAdd, toAdd, at)
		if !e.buffer && e.p.hook != nil {
			e.p.hook.touch(seq)
		}
	}
}

func (e *env) setStatus(seq int, at int64, status uint8) {
	e.change(seq, at, func(it *item) { it.status = status })
}

// addKid appends a nested object and records its appearance; it returns its index, or
// -1 when the item cannot hold more.
func (e *env) addKid(seq int, at int64, kind, status uint8, amount uint16) int {
	it := e.item(seq)
	i := e.p.st.addKid(it, kid{created: at, updated: at, kind: kind, status: status, amount: amount})
	if i < 0 {
		return -1
	}
	it.updated = at
	if e.record {
		e.transition(e.p.m.kidKind(kind), e.kidID(seq, i), e.p.itemID(seq), "", e.p.m.kidStatus(kind, status), "", "", at)
	}
	return i
}

// kidID is a nested object's id as its provider shows it.
func (e *env) kidID(seq, i int) string {
	if e.p.nestedID != nil {
		return e.p.nestedID(seq, i)
	}
	return e.p.kidID(seq, i)
}

func (e *env) setKid(seq, i int, at int64, status uint8) {
	it := e.item(seq)
	k := &e.p.st.kids[int(it.kidOff)+i]
	if k.status == status {
		return
	}
	from := k.status
	k.status, k.updated = status, at
	it.updated = at
	if !e.record {
		return
	}
	e.transition(e.p.m.kidKind(k.kind), e.kidID(seq, i), e.p.itemID(seq), e.p.m.kidStatus(k.kind, from), e.p.m.kidStatus(k.kind, status), "", "", at)
}

// lastKid returns the index and value of the item's newest nested object of kind k.
func (e *env) lastKid(seq int, k uint8) (int, kid) {
	ks := e.kids(seq)
	for i := len(ks) - 1; i >= 0; i-- {
		if ks[i].kind == k {
			return i, ks[i]
		}
	}
	return -1, kid{}
}

// schedule makes next (strictly after at) the item's next step; 0 means none.
func (s *Sim) schedule(p *prov, seq int, at, next int64) {
	it := &p.st.items[seq]
	if next <= 0 {
		it.due = 0
		return
	}
	next = max(next, at+1)
	it.due = next
	s.heap.push(event{due: next, seq: int32(seq), prov: uint8(p.idx)})
}

// interArrival draws the time to the next Rate arrival (exponential), in ms.
func (s *Sim) interArrival() int64 {
	return int64(s.rng.ExpFloat64() / s.cfg.Rate * 1000)
}

// advance processes every event due by t (unix ms); the caller holds s.mu.
func (s *Sim) advance(t int64) {
	for n := 0; n < maxEventsPerStep && len(s.heap) > 0 && s.heap[0].due <= t; n++ {
		ev := s.heap.pop()
		p := s.byIdx[ev.prov]
		if ev.seq < 0 {
			if ev.due != p.arrival {
				continue
			}
			s.createItem(p, ev.due, -1)
			p.arrival = ev.due + s.interArrival()
			s.heap.push(event{due: p.arrival, seq: -1, prov: uint8(p.idx)})
			continue
		}
		it := &p.st.items[ev.seq]
		if it.due != ev.due {
			continue // rescheduled since
		}
		it.due = 0
		e := s.liveEnv(p)
		s.schedule(p, int(ev.seq), ev.due, p.m.step(&e, int(ev.seq), ev.due))
	}
}

// createItem creates one live item at time at (status -1: the machine's choice) and
// schedules it; the caller holds s.mu.
func (s *Sim) createItem(p *prov, at int64, status int) int {
	seq := s.newItem(p, at)
	e := s.liveEnv(p)
	s.schedule(p, seq, at, p.m.create(&e, seq, at, status))
	return seq
}

// buildHistory creates Config.History items created evenly over the HistorySpan before
// the start, each advanced through its lifecycle up to the start. An OpenShare of them
// are stopped part-way (a step that would leave nothing more to happen is undone) and
// scheduled to continue after the start; items created shortly before the start may
// be open as well.
func (s *Sim) buildHistory(p *prov) {
	n := s.cfg.History
	if n == 0 {
		return
	}
	rng := rand.New(rand.NewPCG(s.seed, 0x4157000+uint64(p.idx)))
	e := env{s: s, p: p, rng: rng, record: s.cfg.HistoryTruth, buffer: true}
	span := float64(s.cfg.HistorySpan.Milliseconds())
	base := s.start - int64(span)
	p.st.items = make([]item, 0, n)
	var savedKids []kid
	for i := range n {
		at := min(base+int64(span*(float64(i)+rng.Float64())/float64(n)), s.start-1)
		seq := s.newItem(p, at)
		due := p.m.create(&e, seq, at, -1)
		open := rng.Float64() < s.cfg.OpenShare
		steps := -1 // steps still allowed; -1: up to the start
		if open {
			steps = rng.IntN(4)
			if finalStatus(p, seq) {
				// Created final: only a late nested change could come, and pollers watch a
				// final item for a settle window, not for a month; it finishes in the
				// history instead.
				open, steps = false, -1
			}
		}
		for due > 0 && due < s.start && steps != 0 {
			// This item is the newest, so its nested objects are at the arena's end and a
			// step can be undone by restoring the item and cutting the arena.
			// A step may also change the item's kids in place (a transaction confirmed):
			// their statuses are kept too.
			saved, kids, pending := p.st.items[seq], len(p.st.kids), len(e.pending)
			savedKids = append(savedKids[:0], p.st.kidsOf(&saved)...)
			next := p.m.step(&e, seq, due)
			// An open item stops before the step that would end it or make it final, so
			// that it is left on a status that still moves.
			if open && (next == 0 || finalStatus(p, seq)) {
				p.st.items[seq], p.st.kids, e.pending = saved, p.st.kids[:kids], e.pending[:pending]
				copy(p.st.kidsOf(&saved), savedKids)
				break
			}
			if next > 0 {
				next = max(next, due+1)
			}
			due = next
			steps--
		}
		for _, t := range e.pending {
			s.truth.add(t)
		}
		e.pending = e.pending[:0]
		if due > 0 {
			switch {
			case open && s.cfg.OpenResumeWithin > 0:
				due = s.start + 1 + rng.Int64N(max(1, s.cfg.OpenResumeWithin.Milliseconds()))
			case due < s.start:
				due = e.after(s.start, 1)
			}
			s.schedule(p, seq, s.start, due)
		}
	}
}

// finalStatus reports whether item seq of p has a final top-level status (one of its
// registration's final statuses).
func finalStatus(p *prov, seq int) bool {
	return slices.Contains(simulatedProviders[p.idx].final, p.m.statuses()[p.st.items[seq].status])
}

// requestIDs numbers requests for the providers' request-id headers.
type requestIDs struct {
	n   atomic.Uint64
	key uint64
}

func (r *requestIDs) next() uint64 {
	return mix64(r.n.Add(1) ^ r.key)
}

// reqIDText is a request id of n base-62 characters.
func (s *Sim) reqIDText(n int) string {
	d := deriver{x: s.reqID.next()}
	return d.alnum(n)
}

func (r *requestIDs) uuid() string {
	d := deriver{x: r.next()}
	return d.uuid()
}
