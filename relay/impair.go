package relay

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"
)

// ImpairSpec describes the impairments the relay applies to every packet it forwards:
// a rate limit with a bounded tail-drop queue, a one-way delay with jitter, random loss,
// duplication and reordering. The zero value impairs nothing.
//
// Its text form (the --impair flag) is a comma-separated list of key=value:
//
//	delay=30ms,jitter=5ms,loss=0.5%,dup=0.1%,reorder=1%,rate=10mbit,seed=7
//
// plus the optional limit=BYTES (queue bound behind the rate limit) and gap=DURATION
// (how far a reordered packet is moved, see Impairer).
type ImpairSpec struct {
	Delay   time.Duration // one-way delay added to every packet
	Jitter  time.Duration // uniform in [-Jitter, +Jitter] around Delay (never below 0)
	Loss    float64       // probability 0..1 that a packet is dropped
	Dup     float64       // probability 0..1 that a packet is sent twice
	Reorder float64       // probability 0..1 that a packet leaves out of order
	Gap     time.Duration // reorder displacement; 0 picks a default (see Impairer)
	Rate    int64         // bits per second; 0 means unlimited
	Limit   int           // queue bound in bytes behind Rate; 0 picks a default
	Seed    int64         // random seed: the same seed and arrivals give the same fates
}

// Active reports whether the spec changes anything at all.
func (s ImpairSpec) Active() bool {
	return s.Delay > 0 || s.Jitter > 0 || s.Loss > 0 || s.Dup > 0 || s.Reorder > 0 || s.Rate > 0
}

var errImpairSpec = errors.New("bad impairment spec")

// ParseImpair parses the --impair text form. An empty string is the zero spec.
func ParseImpair(text string) (ImpairSpec, error) {
	var s ImpairSpec
	text = strings.TrimSpace(text)
	if text == "" {
		return s, nil
	}
	for _, kv := range strings.Split(text, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok || v == "" {
			return s, fmt.Errorf("parse impair %q: %w: want key=value, got %q", text, errImpairSpec, kv)
		}
		var err error
		switch strings.ToLower(k) {
		case "delay":
			s.Delay, err = parseNonNegDuration(v)
		case "jitter":
			s.Jitter, err = parseNonNegDuration(v)
		case "gap":
			s.Gap, err = parseNonNegDuration(v)
		case "loss":
			s.Loss, err = ParseFraction(v)
		case "dup", "duplicate":
			s.Dup, err = ParseFraction(v)
		case "reorder":
			s.Reorder, err = ParseFraction(v)
		case "rate":
			s.Rate, err = ParseRate(v)
		case "limit":
			var n int
			n, err = strconv.Atoi(v)
			if err == nil && n < 0 {
				err = errors.New("negative")
			}
			s.Limit = n
		case "seed":
			s.Seed, err = strconv.ParseInt(v, 10, 64)
		default:
			return s, fmt.Errorf("parse impair %q: %w: unknown key %q", text, errImpairSpec, k)
		}
		if err != nil {
			return s, fmt.Errorf("parse impair %q: %w: %s=%s: %v", text, errImpairSpec, k, v, err)
		}
	}
	return s, nil
}

// String renders the spec in the form ParseImpair reads; zero fields are left out.
func (s ImpairSpec) String() string {
	var parts []string
	if s.Delay > 0 {
		parts = append(parts, "delay="+s.Delay.String())
	}
	if s.Jitter > 0 {
		parts = append(parts, "jitter="+s.Jitter.String())
	}
	if s.Loss > 0 {
		parts = append(parts, "loss="+formatFraction(s.Loss))
	}
	if s.Dup > 0 {
		parts = append(parts, "dup="+formatFraction(s.Dup))
	}
	if s.Reorder > 0 {
		parts = append(parts, "reorder="+formatFraction(s.Reorder))
	}
	if s.Gap > 0 {
		parts = append(parts, "gap="+s.Gap.String())
	}
	if s.Rate > 0 {
		parts = append(parts, "rate="+strconv.FormatInt(s.Rate, 10)+"bit")
	}
	if s.Limit > 0 {
		parts = append(parts, "limit="+strconv.Itoa(s.Limit))
	}
	if s.Seed != 0 {
		parts = append(parts, "seed="+strconv.FormatInt(s.Seed, 10))
	}
	return strings.Join(parts, ",")
}

func formatFraction(f float64) string {
	return strconv.FormatFloat(f*100, 'g', -1, 64) + "%"
}

func parseNonNegDuration(v string) (time.Duration, error) {
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, err
	}
	if d < 0 {
		return 0, errors.New("negative duration")
	}
	return d, nil
}

// ParseFraction reads a probability written as a percentage ("0.5%") or a fraction
// ("0.005"). The result is in [0, 1].
func ParseFraction(v string) (float64, error) {
	v = strings.TrimSpace(v)
	pct := strings.HasSuffix(v, "%")
	f, err := strconv.ParseFloat(strings.TrimSuffix(v, "%"), 64)
	if err != nil {
		return 0, fmt.Errorf("parse fraction %q: %w", v, err)
	}
	if pct {
		f /= 100
	}
	if math.IsNaN(f) || f < 0 || f > 1 {
		return 0, fmt.Errorf("parse fraction %q: out of range 0..1 (0%%..100%%)", v)
	}
	return f, nil
}

// ParseRate reads a rate the way tc does: a number with a unit bit, kbit, mbit, gbit
// (bits per second, decimal multiples) or bps, kbps, mbps, gbps (bytes per second).
// A bare number is bits per second. The result is in bits per second.
func ParseRate(v string) (int64, error) {
	s := strings.ToLower(strings.TrimSpace(v))
	i := 0
	for i < len(s) && (s[i] >= '0' && s[i] <= '9' || s[i] == '.') {
		i++
	}
	num, unit := s[:i], s[i:]
	f, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, fmt.Errorf("parse rate %q: %w", v, err)
	}
	mult := map[string]float64{
		"": 1, "bit": 1, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9,
		"bps": 8, "kbps": 8e3, "mbps": 8e6, "gbps": 8e9,
	}[unit]
	if mult == 0 {
		return 0, fmt.Errorf("parse rate %q: unknown unit %q (bit, kbit, mbit, gbit, bps, kbps, mbps, gbps)", v, unit)
	}
	r := f * mult
	if r < 0 || r > math.MaxInt64/2 {
		return 0, fmt.Errorf("parse rate %q: out of range", v)
	}
	return int64(r), nil
}

// Fate says what happens to a packet offered to an Impairer.
type Fate uint8

const (
	FateSend      Fate = iota // released at the returned time(s)
	FateLoss                  // dropped by the random loss
	FateQueueFull             // dropped at the tail of the rate-limit queue
)

// Impairer is the relay's pure impairment scheduler: given a packet's arrival time and
// size it decides whether the packet is dropped and otherwise when it is released (twice
// when duplicated). It keeps the state of a serialising link (rate with a bounded queue,
// tail drop) and of FIFO release order, and draws from a seeded random source, so the
// same spec and the same arrivals always give the same fates.
//
// The model, in order, for each packet:
//
//  1. loss: dropped with probability Loss (before the queue, so it costs no rate);
//  2. rate: the packet waits until the link is free and then takes size*8/Rate to
//     serialise; if the bytes still queued ahead of it exceed Limit it is tail-dropped;
//  3. delay: release = end of serialisation + Delay + uniform jitter in ±Jitter;
//  4. order: release = max(release, previous release), so jitter alone never reorders
//     (netem's behaviour with a rate);
//  5. reorder: with probability Reorder the packet skips step 4 and is displaced by Gap:
//     released Gap ahead of its slot when Delay > 0 (default Gap = Delay, so it goes
//     straight out like netem's reorder), or held back by Gap when Delay is 0
//     (default 1ms), letting later packets overtake it;
//  6. dup: with probability Dup a second copy is released at the same time.
//
// Not safe for concurrent use: the relay's release loop owns it. The zero value is not
// usable; call NewImpairer.
type Impairer struct {
	spec        ImpairSpec
	rng         *rand.Rand
	linkFree    time.Time // when the serialising link finishes the last queued packet
	lastRelease time.Time // release time of the last in-order packet
	nsPerByte   float64   // serialisation time per byte; 0 when unlimited
	limit       int
}

// DefaultQueueLimit is the queue bound used when a spec has a Rate and no Limit: the
// bytes the rate carries in 50 ms, at least 32 KiB.
func DefaultQueueLimit(rate int64) int {
	b := int(rate / 8 / 20)
	if b < 32<<10 {
		b = 32 << 10
	}
	return b
}

// NewImpairer returns a scheduler for spec.
func NewImpairer(spec ImpairSpec) *Impairer {
	im := &Impairer{
		spec: spec,
		rng:  rand.New(rand.NewPCG(uint64(spec.Seed), 0x6d70617468)),
	}
	if spec.Rate > 0 {
		im.nsPerByte = 8e9 / float64(spec.Rate)
		im.limit = spec.Limit
		if im.limit <= 0 {
			im.limit = DefaultQueueLimit(spec.Rate)
		}
	}
	return im
}

// Spec returns the spec the scheduler was made with.
func (im *Impairer) Spec() ImpairSpec { return im.spec }

// Schedule decides the fate of a packet of size bytes arriving at now. When the fate is
// FateSend it appends the release time(s) to dst (one, or two for a duplicate) and
// returns the extended slice; otherwise dst comes back unchanged. Arrival times must not
// go backwards by much: a packet arriving before the previous one is treated as arriving
// at the same time.
func (im *Impairer) Schedule(now time.Time, size int, dst []time.Time) ([]time.Time, Fate) {
	s := &im.spec
	if s.Loss > 0 && im.rng.Float64() < s.Loss {
		return dst, FateLoss
	}
	depart := now
	if im.nsPerByte > 0 {
		start := now
		if im.linkFree.After(now) {
			backlog := int(float64(im.linkFree.Sub(now)) / im.nsPerByte)
			if backlog+size > im.limit {
				return dst, FateQueueFull
			}
			start = im.linkFree
		}
		depart = start.Add(time.Duration(float64(size) * im.nsPerByte))
		im.linkFree = depart
	}
	d := s.Delay
	if s.Jitter > 0 {
		d += time.Duration((im.rng.Float64()*2 - 1) * float64(s.Jitter))
		if d < 0 {
			d = 0
		}
	}
	release := depart.Add(d)
	if s.Reorder > 0 && im.rng.Float64() < s.Reorder {
		gap := s.Gap
		if s.Delay > 0 {
			if gap == 0 || gap > d {
				gap = d
			}
			release = release.Add(-gap)
		} else {
			if gap == 0 {
				gap = time.Millisecond
			}
			release = release.Add(gap)
		}
	} else {
		if release.Before(im.lastRelease) {
			release = im.lastRelease
		}
		im.lastRelease = release
	}
	dst = append(dst, release)
	if s.Dup > 0 && im.rng.Float64() < s.Dup {
		dst = append(dst, release)
	}
	return dst, FateSend
}
