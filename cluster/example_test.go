package cluster_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/fractalrt/fractal/actors"
	"github.com/fractalrt/fractal/cluster"
)

// A node of a cluster: the same kinds on every node, the etcd endpoints,
// and the depth at which subtrees are placed. Requests made on the node's
// System reach every subtree, wherever it lives. (This example needs a
// running etcd, so it is compiled, not run; examples/cluster runs three
// nodes.)
func ExampleStart() {
	ctx := context.Background()
	n, err := cluster.Start(ctx, cluster.Config{
		Name:           "n1", // stable across restarts: its subtrees are files in DataDir
		DataDir:        "data/n1",
		Etcd:           []string{"127.0.0.1:2379"},
		PlacementDepth: 2, // "bank/<branch>" and everything below it live together
		Options:        actors.Options{Kinds: kinds()},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer n.Close(ctx)

	// Deposit and int are registered (actors.RegisterMessage): they may
	// travel to another node.
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	balance, err := n.System().Request(rctx, "bank/paris/alice", Deposit{Amount: 10})
	if err != nil {
		log.Fatal(err) // errors.Is(err, cluster.ErrUnavailable) when the branch's node is down
	}
	fmt.Println(balance)

	// Move the branch to another node: drained, copied, verified, switched.
	if err := n.Move(ctx, "bank/paris", "n2"); err != nil {
		log.Fatal(err)
	}
}
