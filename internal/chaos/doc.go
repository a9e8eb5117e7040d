// Package chaos holds fractal's reliability tests (issue 10): the runtime
// under faults it must survive, each asserting that nothing acknowledged is
// lost, nothing is applied twice and no file is corrupted.
//
//   - Crash (crash_test.go): a System in a child process under a mixed load
//     (writes, durable alarms, passivation) is killed with SIGKILL at random
//     moments, restarted, and the files are checked after every cycle.
//   - Disk full (diskfull_test.go): the data directory on a small tmpfs,
//     filled until writes fail, then freed.
//   - File faults (filefaults_test.go): truncated, corrupted, deleted and
//     read-only part files, and a file from a newer schema.
//   - Resource exhaustion (exhaustion_test.go): a flood of one slow part,
//     and thousands of parts under a low descriptor limit.
//   - Bad input and security (input_test.go): unknown messages, hostile
//     paths. The fractal command's fuzz and read-only tests live beside it,
//     in cmd/fractal.
//
// The quick versions run in `make test`; `make chaos` runs the full ones
// (for example -chaos.cycles=200) and the figures are recorded in
// docs/RELIABILITY.md. The package has no API: its tests re-execute their
// own binary as the child process (see TestMain).
package chaos
