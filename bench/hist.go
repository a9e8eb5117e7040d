package main

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// A histogram records latencies in nanoseconds in log-linear buckets: exact
// below 128 ns, then 64 buckets per power of two, so a quantile is off by
// less than 1/64 (about 1.6%) of its value. It is safe for concurrent use:
// recording is one atomic add, spread over shards so that thousands of
// goroutines do not all hit the same cache lines.
type histogram struct {
	shards [histShards]histShard
}

const (
	histShards  = 16
	histSubBits = 6 // 64 sub-buckets per power of two
	histSub     = 1 << histSubBits
	histBuckets = (64-histSubBits-1)*histSub + 2*histSub // every uint64 value
)

type histShard struct {
	counts [histBuckets]atomic.Uint64
	_      [64]byte
}

func bucketOf(v uint64) int {
	if v < 2*histSub {
		return int(v)
	}
	shift := bits.Len64(v) - histSubBits - 1
	return shift*histSub + int(v>>shift)
}

// bucketValue returns the middle of bucket i.
func bucketValue(i int) uint64 {
	if i < 2*histSub {
		return uint64(i)
	}
	shift := i/histSub - 1
	low := uint64(i-shift*histSub) << shift
	return low + (uint64(1)<<shift)/2
}

// record adds d; hint picks the shard (a client's number, say).
func (h *histogram) record(hint int, d time.Duration) {
	if d < 0 {
		d = 0
	}
	h.shards[uint(hint)%histShards].counts[bucketOf(uint64(d))].Add(1)
}

// snapshot merges the shards.
func (h *histogram) snapshot() *latencies {
	l := &latencies{}
	for s := range h.shards {
		for i := range h.shards[s].counts {
			if c := h.shards[s].counts[i].Load(); c > 0 {
				l.counts[i] += c
				l.n += c
			}
		}
	}
	return l
}

// latencies is a merged, read-only histogram.
type latencies struct {
	counts [histBuckets]uint64
	n      uint64
}

// quantile returns the latency below which a fraction q of the samples
// fall, or 0 without samples.
func (l *latencies) quantile(q float64) time.Duration {
	if l.n == 0 {
		return 0
	}
	rank := uint64(q * float64(l.n))
	if rank >= l.n {
		rank = l.n - 1
	}
	var seen uint64
	for i, c := range l.counts {
		seen += c
		if seen > rank {
			return time.Duration(bucketValue(i))
		}
	}
	return time.Duration(bucketValue(histBuckets - 1))
}
