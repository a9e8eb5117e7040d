// Package actors is fractal's runtime: a tree of parts, each an actor that
// owns one SQLite file, built on protoactor-go.
//
// The whole accepts requests, its parts accept requests, and the parts of
// parts accept requests. A part handles each message inside a transaction on
// its own file, and its reply leaves only after that transaction commits.
//
// # The tree
//
// An application declares the tree's shape as data: one Kind per level,
// matched by a path pattern ("mail", "mail/*", "mail/*/*"). Open validates
// the kinds: every level's parent level must be declared, because a part is
// activated and supervised by its parent, so the path tree and the
// supervision tree are one tree.
//
// # Paths
//
// A Path names a part: segments separated by '/', each any non-empty UTF-8
// string of at most MaxSegmentBytes bytes other than "." and "..", without
// '/'. Inside a handler, paths may be relative ("..", "../bob@example.org").
// An invalid path is refused with an error wrapping ErrInvalidPath and
// creates nothing.
//
// # Files
//
// The data directory mirrors the tree: the part at mail/example.org owns
// DIR/mail/example.org/_part.db, and its children are the directories beside
// that file, so a subtree is one directory. Segments become file names by a
// reversible encoding that is safe on case-insensitive file systems (see
// EncodeSegment); names that start with '_' belong to the runtime.
//
// # A message's life
//
// Request and Send address a part by path. An active part is reached
// directly; a part that is not active is activated by its nearest active
// ancestor, which spawns it as its child. The part opens its file on its
// first message (creating it and applying the kind's migrations), begins a
// transaction, and calls its Handler with a Context that gives SQL access
// inside that transaction and holds the messages sent with Context.Send.
//
//   - The handler returns a reply: the transaction commits (durably, at the
//     configured persistence.SyncMode), then the reply is released to the
//     caller and the held messages are sent.
//   - The handler returns an error: the transaction rolls back, the caller
//     gets the error, nothing is sent.
//   - The commit fails: the caller gets an error wrapping
//     persistence.ErrCommit, nothing is sent, the file is unchanged.
//   - The handler panics: the transaction rolls back, the caller gets a
//     *PanicError (wrapping ErrPanic), and the part's parent restarts it: its
//     file is closed and reopened and a new handler is made, so everything in
//     memory is rebuilt from what was committed.
//
// # Promises
//
//   - No reply and no sent message is observable before the state change
//     that produced it is durable.
//   - A message's effects are atomic: all of its writes, or none.
//   - A restart loses nothing that was acknowledged, and neither does Close
//     followed by Open on the same directory.
//   - One part's failure does not stop its siblings.
//
// Messages sent with Send and Context.Send are delivered at most once.
//
// # Shutdown
//
// Close stops accepting requests, waits for the messages already accepted,
// then stops the parts leaves first and closes every file. Open on the same
// directory brings every part back with its state, activated by its next
// message: Open itself reads no part.
//
// # Testing
//
// Package actortest runs kinds against a temporary data directory and checks
// every file's integrity when the test ends.
package actors
