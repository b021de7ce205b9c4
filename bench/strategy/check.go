package main

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/payments-watcher/watcher/poller"
	"github.com/payments-watcher/watcher/sim"
)

// itemKey names one item, nested or not, across providers.
type itemKey struct {
	provider, kind, parent, id string
}

func (k itemKey) String() string {
	if k.parent != "" {
		return fmt.Sprintf("%s %s %s/%s", k.provider, k.kind, k.parent, k.id)
	}
	return fmt.Sprintf("%s %s %s", k.provider, k.kind, k.id)
}

// status is a raw status with its addendum: what a transition changes.
type status struct {
	raw, addendum string
}

func (s status) String() string {
	if s.raw == "" {
		return "(new)"
	}
	if s.addendum != "" {
		return s.raw + "+" + s.addendum
	}
	return s.raw
}

// observation is one detected transition: an event watcher committed, or a
// transition the naive poller found.
type observation struct {
	key     itemKey
	eventID string
	prev    *status // nil on first sight
	cur     status
	seq     uint32
	at      time.Time // when it was observed (wall clock, UTC)
}

// recorder collects observations and keeps each item's latest observed status. It is
// safe for concurrent use.
type recorder struct {
	mu   sync.Mutex
	obs  []observation
	last map[itemKey]lastSeen
}

type lastSeen struct {
	seq uint32
	st  status
}

func newRecorder() *recorder { return &recorder{last: map[itemKey]lastSeen{}} }

func (r *recorder) add(o observation) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.obs = append(r.obs, o)
	if l, ok := r.last[o.key]; !ok || o.seq >= l.seq {
		r.last[o.key] = lastSeen{o.seq, o.cur}
	}
}

func (r *recorder) snapshot() []observation {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.obs)
}

// behind counts the items whose latest status in the truth the recorder has not seen
// as the item's latest observation: final ones and others.
func (r *recorder) behind(ti *truthIndex) (final, other int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for k, c := range ti.chains {
		l, ok := r.last[k]
		if ok && l.st == c.lastState() {
			continue
		}
		// An item that went back to the status it had at the start (and was never
		// seen elsewhere) is where the recorder left it: nothing is missing.
		if !ok && c.states[0].raw != "" && c.states[0] == c.lastState() {
			continue
		}
		if c.final {
			final++
		} else {
			other++
		}
	}
	return final, other
}

// terminal tells whether raw is a final status of kind for provider, from the
// provider's status tables.
func terminal(provider, kind, raw string) (bool, error) {
	m, ok := poller.Providers[provider].Statuses[kind]
	if !ok {
		return false, fmt.Errorf("truth names kind %q of provider %q, which has no status table here", kind, provider)
	}
	return m[raw].Terminal, nil
}

// chain is one item's statuses in the truth: states[0] is the status before the
// first recorded transition ("" when the item appeared during the run), states[i] the
// status after transition i, which took effect at at[i] (simulated time).
type chain struct {
	states []status
	at     []time.Time
	final  bool // the last status is final
}

func (c *chain) lastState() status { return c.states[len(c.states)-1] }

// truthIndex is the simulator's ground truth by item.
type truthIndex struct {
	chains map[itemKey]*chain
	// newItems holds the top-level items (provider + "/" + id) created during the run.
	newItems map[string]bool
	// transitions counts the truth's transitions.
	transitions int
	// finalBefore holds the top-level items (provider + "/" + id) whose status was
	// final when the run started.
	finalBefore map[string]bool
}

func indexTruth(ts []sim.Transition) (*truthIndex, error) {
	ti := &truthIndex{chains: map[itemKey]*chain{}, newItems: map[string]bool{}, transitions: len(ts)}
	for _, t := range ts {
		k := itemKey{t.Provider, t.Kind, t.ParentID, t.ID}
		c := ti.chains[k]
		if c == nil {
			c = &chain{states: []status{{t.From, t.FromAddendum}}, at: []time.Time{{}}}
			ti.chains[k] = c
			if t.ParentID == "" && t.From == "" {
				ti.newItems[t.Provider+"/"+t.ID] = true
			}
		}
		if last := c.lastState(); last != (status{t.From, t.FromAddendum}) {
			return nil, fmt.Errorf("truth transition %d of %s starts at %s, but the item was %s", t.Seq, k, status{t.From, t.FromAddendum}, last)
		}
		c.states = append(c.states, status{t.To, t.ToAddendum})
		c.at = append(c.at, t.At)
	}
	for k, c := range ti.chains {
		fin, err := terminal(k.provider, k.kind, c.lastState().raw)
		if err != nil {
			return nil, err
		}
		c.final = fin
	}
	return ti, nil
}

// isNew reports whether the item (or, for a nested item, its parent) was created
// during the run.
func (ti *truthIndex) isNew(k itemKey) bool {
	top := k.id
	if k.parent != "" {
		top = k.parent
	}
	return ti.newItems[k.provider+"/"+top]
}

// parentFinal reports whether the top-level status of a nested item's parent was
// final just before t (simulated time): the change happened to an item that was
// otherwise done, which watcher re-reads at the settling period.
func (ti *truthIndex) parentFinal(k itemKey, t time.Time) bool {
	if k.parent == "" {
		return false
	}
	top := itemKey{k.provider, poller.Providers[k.provider].Kind, "", k.parent}
	if c := ti.chains[top]; c != nil {
		idx := 0
		for j := 1; j < len(c.states); j++ {
			if c.at[j].Before(t) {
				idx = j
			}
		}
		if idx > 0 || c.states[0].raw != "" {
			fin, _ := terminal(k.provider, top.kind, c.states[idx].raw)
			return fin
		}
		return false
	}
	return ti.finalBefore[k.provider+"/"+k.parent]
}

// verdict is how one poller's observations compare with the truth.
type verdict struct {
	Observed int
	// DupIDs counts observations whose event id was already seen; DupSeqs those whose
	// item and sequence were already seen.
	DupIDs, DupSeqs int
	// NotInTruth counts observations of items the truth never changed; NotSubsequence
	// those (these included) that are not a subsequence of their item's truth.
	NotInTruth, NotSubsequence int
	// TruthItems counts items with transitions in the truth; TruthFinal those whose
	// last status is final.
	TruthItems, TruthFinal int
	// MissedFinal counts items whose final status in the truth was never observed;
	// BehindOpen those whose last, non-final status was not.
	MissedFinal, BehindOpen int
	// Collapsed counts truth transitions that no observation reports (an item moved
	// more than once between two readings).
	Collapsed int
	// DelayNew, DelayOld and DelayFinal are the times from a change in the truth to
	// its observation: for items created during the run; for history items; and, taken
	// out of those, for nested items that changed while their parent's own status was
	// already final (CPN refunds of failed payments, Coindirect transactions of final
	// payments).
	DelayNew, DelayOld, DelayFinal []time.Duration
	// Changes holds the same delays by truth transition: the item and the index of
	// the status in its chain.
	Changes map[changeRef]time.Duration
	// Examples describe the first problems found.
	Examples []string
}

const maxExamples = 8

// changeRef names one transition of the truth: the item, and the index in its chain
// of the status it moved to.
type changeRef struct {
	key itemKey
	idx int
}

func (v *verdict) example(format string, args ...any) {
	if len(v.Examples) < maxExamples {
		v.Examples = append(v.Examples, fmt.Sprintf(format, args...))
	}
}

// check compares observations with the truth. offset is the wall clock minus the
// simulated clock during the run: a truth time t happened at wall time t+offset.
func check(obs []observation, ti *truthIndex, offset time.Duration) verdict {
	v := verdict{Observed: len(obs), TruthItems: len(ti.chains), Changes: map[changeRef]time.Duration{}}
	ids := make(map[string]struct{}, len(obs))
	type seqKey struct {
		k   itemKey
		seq uint32
	}
	seqs := make(map[seqKey]struct{}, len(obs))
	byItem := map[itemKey][]observation{}
	for _, o := range obs {
		if _, dup := ids[o.eventID]; dup {
			v.DupIDs++
			v.example("duplicate event id %s (%s seq %d)", o.eventID, o.key, o.seq)
		}
		ids[o.eventID] = struct{}{}
		if _, dup := seqs[seqKey{o.key, o.seq}]; dup {
			v.DupSeqs++
			v.example("duplicate sequence %d of %s", o.seq, o.key)
			continue
		}
		seqs[seqKey{o.key, o.seq}] = struct{}{}
		byItem[o.key] = append(byItem[o.key], o)
	}
	matched := 0
	for k, os := range byItem {
		c := ti.chains[k]
		if c == nil {
			v.NotInTruth += len(os)
			v.NotSubsequence += len(os)
			v.example("%s: %d observation(s) of an item the truth never changed, first %s -> %s", k, len(os), prevText(os[0].prev), os[0].cur)
			continue
		}
		slices.SortFunc(os, func(a, b observation) int { return cmp.Compare(a.seq, b.seq) })
		isNew := ti.isNew(k)
		pos := -1 // index in c.states of the last matched status
		for i, o := range os {
			if bad := matchPrev(c, &pos, o, i > 0); bad != "" {
				v.NotSubsequence += len(os) - i
				v.example("%s seq %d %s -> %s: %s (truth %v)", k, o.seq, prevText(o.prev), o.cur, bad, c.states)
				break
			}
			j := matchCur(c, pos, o.cur, o.at.Add(-offset))
			if j < 0 {
				v.NotSubsequence += len(os) - i
				v.example("%s seq %d %s -> %s: not in the truth after %s (truth %v)", k, o.seq, prevText(o.prev), o.cur, c.states[pos], c.states)
				break
			}
			pos = j
			matched++
			d := o.at.Sub(c.at[j].Add(offset))
			v.Changes[changeRef{k, j}] = d
			switch {
			case isNew:
				v.DelayNew = append(v.DelayNew, d)
			case ti.parentFinal(k, c.at[j]):
				v.DelayFinal = append(v.DelayFinal, d)
			default:
				v.DelayOld = append(v.DelayOld, d)
			}
		}
	}
	for k, c := range ti.chains {
		if c.final {
			v.TruthFinal++
		}
		os := byItem[k]
		if len(os) > 0 && os[len(os)-1].cur == c.lastState() {
			continue
		}
		if c.final {
			v.MissedFinal++
			v.example("%s: final status %s never observed (truth %v)", k, c.lastState(), c.states)
		} else {
			v.BehindOpen++
		}
	}
	v.Collapsed = ti.transitions - matched
	return v
}

func prevText(p *status) string {
	if p == nil {
		return "(new)"
	}
	return p.String()
}

// matchPrev checks the observation's previous status against the truth and moves pos
// to it. continuing means an earlier observation of the item matched at pos.
func matchPrev(c *chain, pos *int, o observation, continuing bool) string {
	prev := status{}
	if o.prev != nil {
		prev = *o.prev
	}
	if continuing {
		if c.states[*pos] != prev {
			return fmt.Sprintf("previous status does not continue the last observation (%s)", c.states[*pos])
		}
		return ""
	}
	if o.prev == nil {
		if c.states[0].raw != "" {
			return "first sight of an item that existed before the run"
		}
		*pos = 0
		return ""
	}
	for j, s := range c.states {
		if s == prev && (j > 0 || s.raw != "") {
			*pos = j
			return ""
		}
	}
	return "previous status not in the truth"
}

// matchCur returns the index after pos of the truth status the observation reports:
// the latest occurrence of cur that had happened by the observation (simulated time
// simAt), or else the first occurrence; -1 when cur does not occur after pos.
func matchCur(c *chain, pos int, cur status, simAt time.Time) int {
	first, best := -1, -1
	for j := pos + 1; j < len(c.states); j++ {
		if c.states[j] != cur {
			continue
		}
		if first < 0 {
			first = j
		}
		if !c.at[j].After(simAt) {
			best = j
		}
	}
	if best >= 0 {
		return best
	}
	return first
}

// quantiles of a set of durations (nearest rank).
type quantiles struct {
	N                   int
	Median, P99, Max    time.Duration
	WithinN, WithinOver int // how many are within the target, and over it
}

func summarize(ds []time.Duration, target time.Duration) quantiles {
	if len(ds) == 0 {
		return quantiles{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := func(p float64) time.Duration {
		i := int(math.Ceil(p*float64(len(s)))) - 1
		return s[max(0, min(i, len(s)-1))]
	}
	q := quantiles{N: len(s), Median: rank(0.5), P99: rank(0.99), Max: s[len(s)-1]}
	for _, d := range s {
		if d <= target {
			q.WithinN++
		} else {
			q.WithinOver++
		}
	}
	return q
}
