package supervisor

import (
	"fmt"
	"strconv"
	"time"
)

// Strategy selects which children are restarted when one of them exits and
// has to be restarted. The zero value is OneForOne, the OTP default.
//
// String returns the OTP name ("one_for_one", "one_for_all",
// "rest_for_one"); the set is closed, so the strings are safe to use as
// metric label values.
type Strategy uint8

const (
	// OneForOne restarts only the child that exited.
	OneForOne Strategy = iota
	// OneForAll terminates every other child (reverse start order) and then
	// restarts all of them (start order).
	OneForAll
	// RestForOne terminates the children started after the one that exited
	// (reverse start order) and then restarts the exited child and those
	// children (start order).
	RestForOne
)

var strategyNames = [...]string{
	OneForOne:  "one_for_one",
	OneForAll:  "one_for_all",
	RestForOne: "rest_for_one",
}

// String returns the OTP name of the strategy, or "strategy(N)" for a value
// that is not one of the constants.
func (s Strategy) String() string {
	if s.valid() {
		return strategyNames[s]
	}
	return "strategy(" + strconv.Itoa(int(s)) + ")"
}

func (s Strategy) valid() bool { return int(s) < len(strategyNames) }

// ParseStrategy returns the Strategy whose String is text. An unknown name
// yields an error wrapping ErrInvalidSpec.
func ParseStrategy(text string) (Strategy, error) {
	for i, name := range strategyNames {
		if name == text {
			return Strategy(i), nil
		}
	}
	return 0, fmt.Errorf("%w: unknown strategy %q", ErrInvalidSpec, text)
}

// MarshalText implements encoding.TextMarshaler, so a Strategy reads as its
// OTP name in JSON, TOML or flag values.
func (s Strategy) MarshalText() ([]byte, error) {
	if !s.valid() {
		return nil, fmt.Errorf("%w: unknown strategy %d", ErrInvalidSpec, uint8(s))
	}
	return []byte(s.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler using ParseStrategy.
func (s *Strategy) UnmarshalText(text []byte) error {
	v, err := ParseStrategy(string(text))
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// RestartType says whether a child is restarted after it exits. The zero
// value is Permanent, the OTP default.
type RestartType uint8

const (
	// Permanent children are always restarted, whatever the exit reason.
	Permanent RestartType = iota
	// Transient children are restarted only after an abnormal exit
	// (Failure); after a Normal or Shutdown exit they are removed.
	Transient
	// Temporary children are never restarted: on any exit they are
	// removed, and when a sibling's restart makes the supervisor terminate
	// them (OneForAll, RestForOne) they are terminated and removed too.
	Temporary
)

var restartNames = [...]string{
	Permanent: "permanent",
	Transient: "transient",
	Temporary: "temporary",
}

// String returns the OTP name of the restart type ("permanent", "transient",
// "temporary"), or "restart(N)" for a value that is not one of the
// constants.
func (r RestartType) String() string {
	if r.valid() {
		return restartNames[r]
	}
	return "restart(" + strconv.Itoa(int(r)) + ")"
}

func (r RestartType) valid() bool { return int(r) < len(restartNames) }

// ParseRestartType returns the RestartType whose String is text. An unknown
// name yields an error wrapping ErrInvalidSpec.
func ParseRestartType(text string) (RestartType, error) {
	for i, name := range restartNames {
		if name == text {
			return RestartType(i), nil
		}
	}
	return 0, fmt.Errorf("%w: unknown restart type %q", ErrInvalidSpec, text)
}

// MarshalText implements encoding.TextMarshaler.
func (r RestartType) MarshalText() ([]byte, error) {
	if !r.valid() {
		return nil, fmt.Errorf("%w: unknown restart type %d", ErrInvalidSpec, uint8(r))
	}
	return []byte(r.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler using ParseRestartType.
func (r *RestartType) UnmarshalText(text []byte) error {
	v, err := ParseRestartType(string(text))
	if err != nil {
		return err
	}
	*r = v
	return nil
}

// ExitReason classifies why a child exited. The zero value is Failure:
// anything not explicitly a normal or shutdown exit is abnormal, as in OTP,
// and values other than the three constants are treated as Failure too.
type ExitReason uint8

const (
	// Failure is an abnormal exit: a panic, an error, a killed child.
	Failure ExitReason = iota
	// Normal is a clean exit the child decided on by itself (OTP's normal).
	Normal
	// Shutdown is an orderly exit requested from outside the supervisor,
	// for example by the child's own stop protocol (OTP's shutdown and
	// {shutdown, Term}).
	Shutdown
)

// String returns "failure", "normal", "shutdown", or "failure(N)" for a
// value that is not one of the constants (such values count as failures).
func (r ExitReason) String() string {
	switch r {
	case Failure:
		return "failure"
	case Normal:
		return "normal"
	case Shutdown:
		return "shutdown"
	}
	return "failure(" + strconv.Itoa(int(r)) + ")"
}

// Abnormal reports whether the exit is abnormal, that is anything but Normal
// or Shutdown. Transient children are restarted only after abnormal exits.
func (r ExitReason) Abnormal() bool { return r != Normal && r != Shutdown }

// OTP's defaults for the restart intensity, used when a Spec leaves both
// Intensity and Period at zero.
const (
	DefaultIntensity = 1
	DefaultPeriod    = 5 * time.Second
)

// Spec configures a Supervisor. It is plain data: it can be built in code,
// decoded from configuration (Strategy has text marshalling) and printed
// with String.
//
// The zero value is valid and means OTP's defaults: OneForOne, at most 1
// restart in 5 seconds, no backoff delay.
type Spec struct {
	// Strategy picks which children restart together.
	Strategy Strategy

	// Intensity is OTP's MaxR: the number of restarts tolerated within
	// Period. The restart that makes the count exceed Intensity is not
	// carried out; the supervisor escalates instead. Intensity must not be
	// negative.
	//
	// Intensity and Period both zero select DefaultIntensity and
	// DefaultPeriod. Intensity zero with a positive Period means no restart
	// is tolerated: the first restart escalates.
	Intensity int

	// Period is OTP's MaxT, the length of the sliding window in which
	// restarts are counted. It must be positive when Intensity is positive
	// and must never be negative.
	Period time.Duration

	// Backoff delays restarts. The zero value restarts immediately.
	Backoff Backoff
}

// Validate reports whether the Spec can be used. The error, if any, wraps
// ErrInvalidSpec and names the first offending field.
func (s Spec) Validate() error {
	switch {
	case !s.Strategy.valid():
		return fmt.Errorf("%w: unknown strategy %d", ErrInvalidSpec, uint8(s.Strategy))
	case s.Intensity < 0:
		return fmt.Errorf("%w: intensity %d is negative", ErrInvalidSpec, s.Intensity)
	case s.Period < 0:
		return fmt.Errorf("%w: period %v is negative", ErrInvalidSpec, s.Period)
	case s.Intensity > 0 && s.Period == 0:
		return fmt.Errorf("%w: intensity %d needs a positive period", ErrInvalidSpec, s.Intensity)
	}
	return s.Backoff.Validate()
}

// withDefaults returns s with OTP's intensity defaults applied when both
// Intensity and Period are zero.
func (s Spec) withDefaults() Spec {
	if s.Intensity == 0 && s.Period == 0 {
		s.Intensity, s.Period = DefaultIntensity, DefaultPeriod
	}
	return s
}

// String describes the effective spec, after defaults, as space separated
// fields, for example
//
//	one_for_all intensity=3 period=10s
//	one_for_one intensity=5 period=1m0s initial=100ms max=10s multiplier=2 jitter=0.2
//
// The backoff fields appear only when a backoff is configured.
func (s Spec) String() string {
	s = s.withDefaults()
	out := s.Strategy.String() +
		" intensity=" + strconv.Itoa(s.Intensity) +
		" period=" + s.Period.String()
	if s.Backoff != (Backoff{}) {
		out += " " + s.Backoff.String()
	}
	return out
}
