//go:build !unix

package actors

// defaultMaxActive is a conservative cap where the descriptor limit cannot
// be read.
func defaultMaxActive() int { return 1000 }
