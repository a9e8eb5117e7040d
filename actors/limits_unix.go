//go:build unix

package actors

import "syscall"

// defaultMaxActive derives the cap on active parts from the process's
// file-descriptor limit: three descriptors per open part, 256 kept for the
// rest of the process, and a tenth of the remainder for the parts that
// activate while the passivator brings the count back under the cap.
func defaultMaxActive() int {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil || lim.Cur > 1<<30 {
		return 100_000
	}
	return max(16, (int(lim.Cur)-256)*9/10/3)
}
