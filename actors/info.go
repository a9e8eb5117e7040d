package actors

import (
	"context"
	"os"
)

// PartInfo is what System.Info tells of one part: for an inspection page
// or an operator, not for program logic (it is a snapshot that may be
// stale as soon as it is read).
type PartInfo struct {
	Path     string `json:"path"`
	Name     string `json:"name"`
	Kind     string `json:"kind"`
	Active   bool   `json:"active"`
	Mailbox  int    `json:"mailbox"`  // messages waiting, while active
	Bytes    int64  `json:"bytes"`    // the file and its write-ahead log, on disk now
	Failures int64  `json:"failures"` // handler panics since the part was activated
	// LastError is the last panic or activation error of this activation.
	LastError string `json:"last_error,omitempty"`
	// Children counts the children the part ever activated (its record).
	Children int `json:"children"`
}

// Info returns what is known of the part at path without activating it:
// whether it is active, its mailbox, failures and last error while active,
// the size of its file, and how many children it recorded. A part that was
// never activated has zero Bytes and no children.
func (s *System) Info(ctx context.Context, path string) (PartInfo, error) {
	p, err := s.target(path)
	if err != nil {
		return PartInfo{}, err
	}
	k, _ := s.tree.match(p)
	info := PartInfo{Path: p.String(), Name: p.Name(), Kind: k.Name}
	if v, ok := s.parts.Load(p.String()); ok {
		pt := v.(*part)
		info.Active = true
		info.Mailbox = max(0, int(pt.gauges.queued.Load()))
		info.Failures = pt.gauges.failures.Load()
		if e := pt.gauges.lastErr.Load(); e != nil {
			info.LastError = *e
		}
	}
	for _, suffix := range []string{"", "-wal"} {
		if fi, err := os.Stat(p.File(s.dir) + suffix); err == nil {
			info.Bytes += fi.Size()
		}
	}
	children, err := s.Children(ctx, path)
	if err != nil {
		return info, err
	}
	info.Children = len(children)
	return info, nil
}
