package chaos

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fractalrt/fractal/actors"
	"github.com/fractalrt/fractal/actors/actortest"
	"github.com/fractalrt/fractal/persistence"
)

// diskFullEnv must be 1 for TestDiskFull to run: it mounts a file system,
// which needs root (CAP_SYS_ADMIN). `make chaos` sets it when it can mount,
// and says loudly when it cannot.
const diskFullEnv = "FRACTAL_CHAOS_DISKFULL"

// The disk-full workload: each write stores its id and a payload; one in
// four also sends a durable message (fullEcho) to another part, whose
// handler records the id in received (no uniqueness constraint: a message
// handled twice shows).
type (
	fullWrite struct {
		ID   string
		Size int
		To   string // when set, a durable fullEcho goes there
	}
	fullCount struct{}
	fullEcho  struct{ ID string }
)

func init() { actors.MustRegisterMessage[fullEcho]("chaos.full.echo") }

var fullMigrations = []persistence.Migration{{Name: "writes", SQL: `
	CREATE TABLE writes (id TEXT NOT NULL, payload BLOB NOT NULL);
	CREATE TABLE counter (n INTEGER NOT NULL);
	INSERT INTO counter VALUES (0);
	CREATE TABLE received (id TEXT NOT NULL);`}}

func fullHandler(c *actors.Context, msg any) (any, error) {
	switch m := msg.(type) {
	case fullCount:
		var n int
		err := c.QueryRow(`SELECT n FROM counter`).Scan(&n)
		return n, err
	case fullEcho:
		_, err := c.Exec(`INSERT INTO received (id) VALUES (?)`, m.ID)
		return nil, err
	case fullWrite:
		if m.To != "" {
			if err := c.SendDurable(m.To, fullEcho{ID: m.ID}); err != nil {
				return nil, err
			}
		}
		if _, err := c.Exec(`INSERT INTO writes (id, payload) VALUES (?, randomblob(?))`, m.ID, m.Size); err != nil {
			return nil, err
		}
		_, err := c.Exec(`UPDATE counter SET n = n + 1`)
		return nil, err
	}
	return nil, fmt.Errorf("%w: %T", actors.ErrUnknownMessage, msg)
}

func fullKinds() []actors.Kind {
	h := actors.HandlerFunc(fullHandler)
	return []actors.Kind{
		{Name: "top", Pattern: "d", Migrations: fullMigrations, Handler: h},
		{Name: "leaf", Pattern: "d/*", Migrations: fullMigrations, Handler: h},
	}
}

// TestDiskFull puts the data directory on a 4 MiB tmpfs, beside a 1 MiB
// filler file, and writes (to existing parts and to new ones) until the
// file system is full and writes fail. Callers must get errors that say
// the disk is full, reads must keep working, and once the filler is
// deleted new writes must succeed without restarting the System. Then
// nothing acknowledged may be missing and every file must pass the
// integrity check.
func TestDiskFull(t *testing.T) {
	if os.Getenv(diskFullEnv) != "1" {
		t.Skipf("needs a tmpfs mount (root): run by make chaos, or with %s=1", diskFullEnv)
	}
	mnt := t.TempDir()
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", 0, "size=4m,mode=0755"); err != nil {
		t.Fatalf("mount a 4 MiB tmpfs on %s: %v (%s=1 requires it)", mnt, err, diskFullEnv)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(mnt, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
		}
	})
	filler := filepath.Join(mnt, "filler")
	if err := os.WriteFile(filler, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(mnt, "data")
	ctx := context.Background()
	reg := prometheus.NewRegistry()
	sys, err := actors.Open(ctx, dir, actors.Options{Kinds: fullKinds(), Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	defer sys.Close(ctx)

	var (
		mu       sync.Mutex
		acked    = map[string]string{} // id -> path
		echoed   = map[string]string{} // id of an acknowledged write -> where its durable message went
		errs     = map[string]int{}    // error text, paths and ids removed -> count
		examples = map[string]error{}
		failed   int
		seq      int
	)
	write := func(path string, size int) error {
		mu.Lock()
		seq++
		id := fmt.Sprintf("w%d", seq)
		to := ""
		if seq%4 == 0 {
			to = fmt.Sprintf("d/p%d", seq/4%8)
		}
		mu.Unlock()
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		_, err := sys.Request(rctx, path, fullWrite{ID: id, Size: size, To: to})
		mu.Lock()
		defer mu.Unlock()
		if err == nil {
			acked[id] = path
			if to != "" {
				echoed[id] = to
			}
			return nil
		}
		failed++
		key := strings.ReplaceAll(err.Error(), path, "PATH")
		key = strings.ReplaceAll(key, dir, "DIR")
		errs[key]++
		examples[key] = err
		return err
	}
	// Fill: four clients, eight parts, and a new part every tenth write,
	// until each client has seen 20 failures in a row.
	start := time.Now()
	var wg sync.WaitGroup
	for c := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			inRow := 0
			for i := 0; inRow < 20 && time.Since(start) < 2*time.Minute; i++ {
				path := fmt.Sprintf("d/p%d", (c+i)%8)
				if i%10 == 0 {
					path = fmt.Sprintf("d/new%d-%d", c, i)
				}
				if write(path, 2000) != nil {
					inRow++
				} else {
					inRow = 0
				}
			}
		}()
	}
	wg.Wait()
	full := time.Since(start)
	if failed == 0 {
		t.Fatal("the file system never filled")
	}
	var kinds []string
	for k, n := range errs {
		kinds = append(kinds, fmt.Sprintf("%5d  %s", n, k))
	}
	sort.Strings(kinds)
	t.Logf("full after %v: %d writes acknowledged, %d refused:\n%s", full.Round(time.Millisecond), len(acked), failed, strings.Join(kinds, "\n"))
	for k, err := range examples {
		// persistence.ErrDiskFull, or the system's ENOSPC where the
		// runtime writes a file itself (a part's directory).
		clear := errors.Is(err, persistence.ErrDiskFull) || errors.Is(err, syscall.ENOSPC)
		wrapped := errors.Is(err, persistence.ErrCommit) || errors.Is(err, actors.ErrActivation) || !strings.Contains(k, "actors:")
		if !clear || !wrapped {
			t.Errorf("an unclear error for a full disk: %v", err)
		}
	}

	// Reads still work on a full disk.
	for i := range 8 {
		path := fmt.Sprintf("d/p%d", i)
		if _, err := sys.Request(ctx, path, fullCount{}); err != nil {
			t.Errorf("a read of %s on a full disk: %v", path, err)
		}
	}

	// Space freed: the same System takes writes again, to old and new parts.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	freed := time.Now()
	for _, path := range []string{"d/p0", "d/p3", "d/p7", "d/after-free", "d"} {
		actortest.CheckFor(t, 30*time.Second-time.Since(freed), 50*time.Millisecond, func() error {
			if err := write(path, 100); err != nil {
				return fmt.Errorf("%s: still failing %v after space was freed: %w", path, time.Since(freed).Round(time.Millisecond), err)
			}
			return nil
		})
	}
	recovered := time.Since(freed)
	// The durable messages of acknowledged writes, held back while their
	// receivers could not commit, are delivered once space is back.
	senders := []string{"d"}
	for _, p := range acked {
		if !slices.Contains(senders, p) {
			senders = append(senders, p)
		}
	}
	if n := waitDelivered(t, sys, senders, freed, 2*time.Minute); n > 0 {
		t.Errorf("%d durable messages still undelivered 2 minutes after space was freed", n)
	}
	delivered := time.Since(freed)
	commitErrors := counterValue(t, reg, "fractal_messages_total", "kind", "leaf", "outcome", "commit_error")
	handlerErrors := counterValue(t, reg, "fractal_messages_total", "kind", "leaf", "outcome", "error")
	activationErrors := counterValue(t, reg, "fractal_messages_total", "kind", "leaf", "outcome", "activation_error")
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := sys.Close(cctx); err != nil {
		t.Errorf("close after recovery: %v", err)
	}

	// Nothing acknowledged is missing; every file is sound.
	byPath := map[string]map[string]bool{}
	for id, p := range acked {
		if byPath[p] == nil {
			byPath[p] = map[string]bool{}
		}
		byPath[p][id] = true
	}
	lost, torn := 0, 0
	for p, ids := range byPath {
		var present []string
		var n int
		err := readOnly(ctx, actors.MustParsePath(p).File(dir), func(tx *persistence.Tx) error {
			var err error
			if present, err = queryStrings(tx, `SELECT id FROM writes`); err != nil {
				return err
			}
			return tx.QueryRow(`SELECT n FROM counter`).Scan(&n)
		})
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		if n != len(present) {
			torn++
			t.Errorf("%s: counter %d, %d rows", p, n, len(present))
		}
		have := map[string]bool{}
		for _, id := range present {
			have[id] = true
		}
		for id := range ids {
			if !have[id] {
				lost++
				t.Errorf("%s: acknowledged write %s is missing", p, id)
			}
		}
	}
	// Each durable message of an acknowledged write was handled once, by
	// its receiver; no message of a refused write was handled.
	received := map[string][]string{} // id -> receivers that handled it
	for i := range 8 {
		p := fmt.Sprintf("d/p%d", i)
		var ids []string
		err := readOnly(ctx, actors.MustParsePath(p).File(dir), func(tx *persistence.Tx) error {
			var err error
			ids, err = queryStrings(tx, `SELECT id FROM received`)
			return err
		})
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		for _, id := range ids {
			received[id] = append(received[id], p)
		}
	}
	committed := map[string]bool{} // ids of the writes in the files, acknowledged or not
	parts, _ := partFiles(t, dir)
	for _, f := range parts {
		err := readOnly(ctx, f, func(tx *persistence.Tx) error {
			if ok, err := hasTable(tx, "writes"); err != nil || !ok {
				return err // created, but its migration met the full disk
			}
			ids, err := queryStrings(tx, `SELECT id FROM writes`)
			for _, id := range ids {
				committed[id] = true
			}
			return err
		})
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
	}
	echoLost, echoTwice, echoStray := 0, 0, 0
	for id, to := range echoed {
		if len(received[id]) == 0 {
			echoLost++
			t.Errorf("the durable message of acknowledged write %s never reached %s", id, to)
		}
	}
	for id, by := range received {
		if len(by) > 1 {
			echoTwice++
			t.Errorf("the durable message of %s was handled %d times (%v)", id, len(by), by)
		}
		if !committed[id] {
			echoStray++ // handled, but its write was rolled back
		}
	}
	checked, _, failures := checkAll(t, dir)
	for _, f := range failures {
		t.Errorf("integrity: %s", f)
	}
	if echoStray > 0 {
		t.Errorf("%d durable messages handled whose write was rolled back", echoStray)
	}
	t.Logf("disk full: tmpfs=4MiB acknowledged=%d refused=%d (metrics: commit_error=%v error=%v activation_error=%v) recovered_in=%v lost=%d torn=%d corrupt=%d/%d files",
		len(acked), failed, commitErrors, handlerErrors, activationErrors, recovered.Round(time.Millisecond), lost, torn, len(failures), checked)
	t.Logf("disk full: durable_acknowledged=%d handled=%d lost=%d handled_twice=%d stray=%d all_delivered_in=%v",
		len(echoed), len(received), echoLost, echoTwice, echoStray, delivered.Round(time.Millisecond))
}
