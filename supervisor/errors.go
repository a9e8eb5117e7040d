package supervisor

import "errors"

// Sentinel errors. Every error returned by this package wraps exactly one of
// them, so callers can branch with errors.Is; the wrapping message adds the
// detail (which field, which child).
var (
	// ErrInvalidSpec reports a Spec or Backoff that cannot be used: an
	// unknown strategy, a negative intensity or period, a positive intensity
	// without a period, or an inconsistent backoff. It is returned by
	// Spec.Validate, Backoff.Validate, New, ParseStrategy, ParseRestartType
	// and the UnmarshalText methods.
	ErrInvalidSpec = errors.New("supervisor: invalid spec")

	// ErrInvalidChild reports a child that cannot be added: an empty id or
	// an unknown RestartType.
	ErrInvalidChild = errors.New("supervisor: invalid child")

	// ErrDuplicateChild reports an Add for an id that is already
	// supervised. Restarted children keep their place and must not be added
	// again; a child that really is new under a reused id must be removed
	// first (see Supervisor.Add).
	ErrDuplicateChild = errors.New("supervisor: duplicate child")

	// ErrUnknownChild reports an Exit or Remove for an id that is not
	// supervised: it was never added, was already removed, or was forgotten
	// by an escalation. For Exit this usually means a stale event (for
	// example the termination of a child the caller stopped while carrying
	// out a Decision) and is safe to ignore; nothing changed.
	ErrUnknownChild = errors.New("supervisor: unknown child")
)
