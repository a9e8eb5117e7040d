package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/fractalrt/fractal/cluster"
)

// cmdMove moves a subtree of a cluster to another node: it asks through
// etcd, and the subtree's owner drains it, copies its files to the target
// and switches the ownership (see package cluster).
func cmdMove(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fl := flag.NewFlagSet("move", flag.ContinueOnError)
	fl.SetOutput(stderr)
	endpoints := fl.String("etcd", "127.0.0.1:2379", "etcd endpoints, comma-separated")
	prefix := fl.String("prefix", cluster.DefaultPrefix, "the cluster's key prefix in etcd")
	timeout := fl.Duration("timeout", 2*time.Minute, "give up (and call the move off) after this long")
	if err := fl.Parse(args); err != nil {
		return usageError("move: %v", err)
	}
	if fl.NArg() != 2 {
		return usageError("move: want SUBTREE NODE")
	}
	unit, to := fl.Arg(0), fl.Arg(1)
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   strings.Split(*endpoints, ","),
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		return fmt.Errorf("move: etcd: %w", err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	start := time.Now()
	if err := cluster.Move(ctx, cli, *prefix, unit, to); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s is on %s (%v)\n", unit, to, time.Since(start).Round(time.Millisecond))
	return nil
}
