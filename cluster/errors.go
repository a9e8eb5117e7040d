package cluster

import "errors"

// Sentinel errors. Callers distinguish them with errors.Is, on the node
// that sent a request as well as on the one that served it: an error that
// crosses the wire keeps its sentinel (see wire.go).
var (
	// ErrNotOwner is returned by a node asked to serve a subtree it does
	// not own (its sender's view of the ownership table was stale; the
	// sender refreshes it and retries), and wrapped by the fence when a
	// node's epoch for a subtree is stale.
	ErrNotOwner = errors.New("cluster: this node does not own the subtree")

	// ErrUnavailable is returned for a subtree whose owner is down (its
	// lease expired), does not answer in time, or could not be assigned.
	// Nothing was done for the request on another node.
	ErrUnavailable = errors.New("cluster: subtree unavailable")

	// ErrMoving is returned when a subtree is being moved and the request
	// could not wait for the move to end (its context ended first).
	ErrMoving = errors.New("cluster: subtree is being moved")

	// ErrLeaseExpired is wrapped by the fence's refusal when this node's
	// lease has expired: it may no longer acknowledge writes for any
	// subtree until it has registered again.
	ErrLeaseExpired = errors.New("cluster: this node's lease has expired")

	// ErrMove is returned by Move when a planned move failed; the subtree
	// stays with its owner.
	ErrMove = errors.New("cluster: move failed")

	// ErrConfig is returned by Start for an invalid Config, or one that
	// disagrees with the cluster's (another placement depth).
	ErrConfig = errors.New("cluster: invalid configuration")

	// ErrClosed is returned by a Node that has been closed.
	ErrClosed = errors.New("cluster: node closed")

	// ErrTooManySubtrees is returned when a new subtree would make the
	// ownership table larger than Config.MaxSubtrees.
	ErrTooManySubtrees = errors.New("cluster: too many subtrees")
)
