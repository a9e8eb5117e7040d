package actors

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sync"
)

// Messages that leave memory (durable messages stored in an outbox, requests
// that travel to another node) are encoded as a registered name and a JSON
// document. A message type is registered once, usually in an init function:
//
//	func init() { actors.MustRegisterMessage[Debit]("bank.Debit") }
//
// The name, not the Go type name, is what is stored, so a type may be
// renamed or moved without breaking files or peers that still hold it.

// MaxMessageSize bounds the encoded size of one message: EncodeMessage and
// DecodeMessage refuse a larger one with an error wrapping
// ErrMessageTooLarge.
const MaxMessageSize = 1 << 20

var (
	// ErrUnregisteredMessage is returned when a message must be encoded or
	// decoded and its type, or name, was not registered with
	// RegisterMessage.
	ErrUnregisteredMessage = errors.New("actors: message type not registered")

	// ErrMessageTooLarge is returned for a message whose encoding exceeds
	// MaxMessageSize.
	ErrMessageTooLarge = errors.New("actors: message too large")
)

var registry struct {
	sync.RWMutex
	byName map[string]reflect.Type
	byType map[reflect.Type]string
}

// RegisterMessage registers the message type T under name, so that values
// of type T can be sent durably or to another node. Registering the same
// type under the same name again is harmless; reusing a name for another
// type, or a type under another name, is an error. T must encode to JSON
// (exported fields; no channels or functions).
func RegisterMessage[T any](name string) error {
	if name == "" {
		return errors.New("actors: RegisterMessage: empty name")
	}
	t := reflect.TypeFor[T]()
	if t.Kind() == reflect.Interface {
		return fmt.Errorf("actors: RegisterMessage(%q): %v is an interface type", name, t)
	}
	registry.Lock()
	defer registry.Unlock()
	if registry.byName == nil {
		registry.byName = make(map[string]reflect.Type)
		registry.byType = make(map[reflect.Type]string)
	}
	if old, ok := registry.byName[name]; ok && old != t {
		return fmt.Errorf("actors: RegisterMessage(%q): name already registered for %v", name, old)
	}
	if old, ok := registry.byType[t]; ok && old != name {
		return fmt.Errorf("actors: RegisterMessage(%q): %v already registered as %q", name, t, old)
	}
	registry.byName[name] = t
	registry.byType[t] = name
	return nil
}

// MustRegisterMessage is RegisterMessage for init functions: it panics
// when registration fails, which only a programming error can cause.
func MustRegisterMessage[T any](name string) {
	if err := RegisterMessage[T](name); err != nil {
		panic(err)
	}
}

// MessageName returns the name msg's type is registered under.
func MessageName(msg any) (string, error) {
	if msg == nil {
		return "", fmt.Errorf("%w: nil message", ErrUnregisteredMessage)
	}
	registry.RLock()
	name, ok := registry.byType[reflect.TypeOf(msg)]
	registry.RUnlock()
	if !ok {
		return "", fmt.Errorf("%w: %T", ErrUnregisteredMessage, msg)
	}
	return name, nil
}

// EncodeMessage returns the registered name of msg's type and its
// encoding.
func EncodeMessage(msg any) (name string, data []byte, err error) {
	if name, err = MessageName(msg); err != nil {
		return "", nil, err
	}
	if data, err = json.Marshal(msg); err != nil {
		return "", nil, fmt.Errorf("actors: encoding %s: %w", name, err)
	}
	if len(data) > MaxMessageSize {
		return "", nil, fmt.Errorf("%w: %s is %d bytes encoded, more than %d", ErrMessageTooLarge, name, len(data), MaxMessageSize)
	}
	return name, data, nil
}

// DecodeMessage decodes data as a message of the type registered under
// name; the value returned has that type (T, not *T, for a type registered
// as T).
func DecodeMessage(name string, data []byte) (any, error) {
	if len(data) > MaxMessageSize {
		return nil, fmt.Errorf("%w: %s is %d bytes, more than %d", ErrMessageTooLarge, name, len(data), MaxMessageSize)
	}
	registry.RLock()
	t, ok := registry.byName[name]
	registry.RUnlock()
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnregisteredMessage, name)
	}
	v := reflect.New(t)
	if err := json.Unmarshal(data, v.Interface()); err != nil {
		return nil, fmt.Errorf("actors: decoding %s: %w", name, err)
	}
	return v.Elem().Interface(), nil
}
