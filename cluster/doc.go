// Package cluster places the subtrees of a fractal tree on several nodes,
// coordinated by etcd. One machine needs none of it: an actors.System alone
// serves the whole tree. When the tree outgrows one machine, each node runs
// a Node (an actors.System whose Options.Remote and Options.Fence the Node
// provides), and the parts of each subtree live, as files, on exactly one
// node at a time.
//
// # Placement
//
// Subtrees at Config.PlacementDepth are the unit of placement: with depth
// 2, "mail/example.org" and every part below it live on one node, in one
// directory of its data directory. A part above that depth ("mail") is
// placed alone. A subtree is placed the first time a message reaches it: the
// node that got the message asks for an owner, and the controller (one node,
// chosen by an etcd election) gives it to the live node that owns the fewest
// subtrees. Parts above the placement depth that a node needs as parents of
// its subtrees run there too, as routing shells: their handlers run only on
// their own owner, and their files elsewhere hold no application state.
//
// # The ownership table in etcd
//
// Everything lives under Config.Prefix (default "/fractal/"):
//
//	config                 {"depth":2}: the placement depth, written by the first node
//	nodes/<name>           {"addr":"127.0.0.1:40123"}: a live node, under its lease
//	owners/<subtree>       {"node":"n2","epoch":3}: the ownership table
//	pending/<subtree>      <name>: a node waiting for the subtree to be placed (under its lease)
//	moves/<subtree>        {"to":"n3","id":"…","err":""}: a planned move, until it ends
//	election/…             the controller's election (etcd's concurrency.Election)
//
// The epoch of a subtree starts at 1 and grows by one at every change of
// owner; rows change only in transactions that compare the row's revision
// (a move) or its absence and the controller's leadership (a placement).
// Each node keeps a copy of the table in memory, loaded at start and kept
// current by one watch on the prefix (each change invalidates the entry it
// concerns); its size is bounded by Config.MaxSubtrees.
//
// # Routing
//
// A message for a part whose subtree this node owns is delivered here.
// Any other message (System.Request, System.Send, a handler's sends) goes to
// the owner's gateway actor over protoactor-go's remote transport (gRPC on
// Config.ListenAddr, loopback by default), which delivers it to its System
// and sends back the reply or the error. Messages and replies travel as
// their registered names and encodings (actors.RegisterMessage); errors
// travel as text with the sentinel they wrap, so errors.Is works on the
// caller's side (see RemoteError). A node asked about a subtree it does not
// own answers ErrNotOwner without forwarding it, and the sender tries again
// once its copy of the table has changed, so that stale copies cause
// retries, never loops. A request made by a handler carries its call path
// (actors.CallPath: the parts waiting along it, innermost first, up to 8
// KiB of paths), so that a cycle of requests across nodes (a -> b -> a)
// fails at once with actors.ErrCallCycle, as on one node, instead of
// waiting for its deadline. A request to a node that is down fails at once with
// ErrUnavailable; one in flight to a node that goes down fails when its
// lease expires, or at once when its connection breaks (a network
// partition: the request may have been served, the error says so). A peer
// that stops answering without the connection breaking is waited for up to
// the caller's deadline, or Config.RequestTimeout without one.
//
// # Fencing
//
// A node registers under a lease of Config.LeaseTTL, renewed every third
// of it. Before every commit of a part, and again before the commit's
// replies are released, the Node's fence checks (two atomic loads and a map
// lookup) that its lease surely still holds (the time a renewal was sent,
// plus the TTL) and that its copy of the table gives it the part's
// subtree. A node frozen past its lease, or whose epoch for a subtree is
// stale, rolls the batch back and its callers get an error wrapping
// actors.ErrFenced: two owners can never both acknowledge writes. A node
// that lost its lease registers again half a TTL later (the writes it had
// under way are refused meanwhile); since a subtree changes owner only
// through a planned move, its subtrees are still its own.
//
// etcd itself: the loss of a minority of its members is not seen (the
// clients and the renewals go to the others). Without a majority, what
// needs etcd fails (placing a subtree, a move), and each node serves its
// subtrees until its lease would expire, then refuses requests for them
// with ErrUnavailable (wrapping ErrLeaseExpired on the owner itself)
// until etcd is back and the lease renewed or the node registered again.
//
// # Planned moves
//
// Move (or `fractal move`) writes a moves/<subtree> key; the owner sees it
// and runs the move: it drains the subtree (actors.System.Drain: new
// messages wait, its parts stop and close their files), copies each file
// with SQLite's backup API, sends the copies to the target in chunks, where
// they are checked (size, SHA-256, SQLite's integrity check) and put in
// place; then it stops acknowledging anything for the subtree and switches
// the owner in one etcd transaction (epoch + 1), and resumes: the messages
// that waited go to the new owner. Requests that arrive meanwhile wait
// instead of failing. A move that fails at any step leaves the subtree with
// its owner and the reason in the move's key, which Move returns.
//
// Only subtrees at the placement depth move. What moves is the parts'
// files, whole: their state, their durable alarms and their outboxes. The
// new owner learns of a moved part's alarms and unsent durable messages
// when the part is next activated there. The node a subtree left keeps the
// entries of its alarm index for the moved parts: they fire there and fail
// (an alarm's wake-up does not travel between nodes), retried with growing
// backoff. System.Children of a part above the placement depth lists the
// children activated on the node it is asked on.
//
// # Node failure
//
// A node that dies leaves its subtrees unavailable: requests for them fail
// with ErrUnavailable while the rest of the cluster serves on. When it
// restarts with the same name and data directory, it waits for its old
// registration to expire, registers again and serves its subtrees from
// their files. Durable messages (actors.Context.SendDurable, Call) to its
// subtrees wait in their senders' outboxes meanwhile and are delivered
// after its return; plain requests and sends fail. A subtree whose node
// lost its disk is lost with it.
//
// # Replication (not built yet)
//
// Surviving the loss of a node's disk needs each committed batch's changes
// copied to other nodes before its replies are released. The place for it
// is actors.Options.Committed: it is called on the part's goroutine after
// each batch that wrote has committed and before its replies and messages
// leave, with the part's path and file; a replicator would copy the frames
// the commit added to the part's log (or use SQLite's session extension) to
// its replicas there, and refuse the batch's replies when too few took them.
// No replicator exists yet.
//
// # Bounds
//
// Requests served for other nodes at once, and requests sent to other
// nodes and not answered yet: Config.MaxInflight each (beyond it,
// actors.ErrBackpressure). Subtrees in the table, and so in each node's
// copy of it: Config.MaxSubtrees. protoactor-go's queues per peer: 10,000
// messages. A request to another node: its context's deadline or
// Config.RequestTimeout. A message or reply: actors.MaxMessageSize.
// Attempts after ErrNotOwner: 50, with growing pauses. A planned move: two
// minutes.
//
// # Security
//
// Every listener binds loopback unless configured otherwise. Config.TLS
// secures the remote transport and Config.EtcdTLS the connection to etcd;
// without them the traffic is plain, which is for loopback and trusted
// networks only.
//
// # Testing
//
// Package etcdlocal runs etcd members inside a process on loopback ports,
// for tests and examples, serving plain HTTP (Start) or TLS with client
// certificates required (StartTLS); the examples/cluster program runs
// three nodes as processes of their own (-tls and -etcd-tls give them
// certificates).
package cluster
