package cluster

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/fractalrt/fractal/actors"
	"github.com/fractalrt/fractal/persistence"
)

// Move moves the subtree unit (a path at the cluster's placement depth) to
// the node named to, and returns once the ownership table names that node,
// or with an error wrapping ErrMove, ErrMoving (another move of it is under
// way) or ErrUnavailable (to is not live), in which case the subtree stays
// where it was. It needs only an etcd client: the move itself is run by
// the subtree's owner (see "Planned moves" in the package documentation).
// When ctx ends first, the move is called off; the owner keeps the subtree
// unless the switch had already happened.
func Move(ctx context.Context, cli *clientv3.Client, prefix, unit, to string) error {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	p, err := actors.ParsePath(unit)
	if err != nil {
		return err
	}
	cfg, err := cli.Get(ctx, keyConfig(prefix))
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrMove, unit, err)
	}
	var conf struct{ Depth int }
	if len(cfg.Kvs) != 1 || json.Unmarshal(cfg.Kvs[0].Value, &conf) != nil {
		return fmt.Errorf("%w: no cluster under %q in etcd", ErrMove, prefix)
	}
	if p.Depth() != conf.Depth {
		return fmt.Errorf("%w: %s: only subtrees at the placement depth (%d) move", ErrMove, unit, conf.Depth)
	}
	ok, mk := keyOwner(prefix, unit), keyMove(prefix, unit)
	resp, err := cli.Txn(ctx).Then(clientv3.OpGet(ok), clientv3.OpGet(keyNode(prefix, to))).Commit()
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrMove, unit, err)
	}
	owner, nodes := resp.Responses[0].GetResponseRange().Kvs, resp.Responses[1].GetResponseRange().Kvs
	if len(owner) == 0 {
		return fmt.Errorf("%w: %s has no owner yet", ErrMove, unit)
	}
	var o Owner
	if err := json.Unmarshal(owner[0].Value, &o); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrMove, unit, err)
	}
	if o.Node == to {
		return nil
	}
	if len(nodes) == 0 {
		return fmt.Errorf("%w: node %s is not live", ErrUnavailable, to)
	}
	id := newID()
	req, _ := json.Marshal(moveReq{To: to, ID: id})
	put, err := cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(mk), "=", 0)).
		Then(clientv3.OpPut(mk, string(req))).Commit()
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrMove, unit, err)
	}
	if !put.Succeeded {
		return fmt.Errorf("%w: %s: another move is under way", ErrMoving, unit)
	}
	ours := clientv3.Compare(clientv3.Value(mk), "=", string(req))
	for {
		select {
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
			dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			cli.Txn(dctx).If(ours).Then(clientv3.OpDelete(mk)).Commit()
			cancel()
			return fmt.Errorf("%w: %s: %w", ErrMove, unit, ctx.Err())
		}
		st, err := cli.Txn(ctx).Then(clientv3.OpGet(mk), clientv3.OpGet(ok)).Commit()
		if err != nil {
			continue // etcd busy, or ctx: checked above
		}
		mv, own := st.Responses[0].GetResponseRange().Kvs, st.Responses[1].GetResponseRange().Kvs
		if len(mv) == 0 {
			if len(own) == 1 && json.Unmarshal(own[0].Value, &o) == nil && o.Node == to {
				return nil
			}
			return fmt.Errorf("%w: %s: the move was called off", ErrMove, unit)
		}
		var m moveReq
		if json.Unmarshal(mv[0].Value, &m) == nil && m.ID == id && m.Err != "" {
			cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(mk), "=", mv[0].ModRevision)).Then(clientv3.OpDelete(mk)).Commit()
			return fmt.Errorf("%w: %s: %s", ErrMove, unit, m.Err)
		}
	}
}

// Move moves the subtree unit to the node named to: see the package-level
// Move.
func (n *Node) Move(ctx context.Context, unit, to string) error {
	return Move(ctx, n.cli, n.cfg.Prefix, unit, to)
}

func newID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// moveTimeout bounds one planned move, from the drain to the switch.
const moveTimeout = 2 * time.Minute

// startMove runs the move of unit, which this node owns, unless it runs
// already.
func (n *Node) startMove(unit string, mv moveReq) {
	n.mu.Lock()
	if _, busy := n.moving[unit]; busy || n.ctx.Err() != nil || mv.To == n.cfg.Name {
		n.mu.Unlock()
		return
	}
	n.moving[unit] = make(chan struct{})
	n.publishMoving()
	n.running.Add(1)
	n.mu.Unlock()
	go func() {
		defer n.running.Done()
		err := n.runMove(unit, mv)
		if err == nil {
			return
		}
		n.log.Warn("move failed", "unit", unit, "to", mv.To, "err", err)
		mv.Err = err.Error()
		val, _ := json.Marshal(mv)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		mk := keyMove(n.cfg.Prefix, unit)
		req, _ := json.Marshal(moveReq{To: mv.To, ID: mv.ID})
		n.cli.Txn(ctx).If(clientv3.Compare(clientv3.Value(mk), "=", string(req))).Then(clientv3.OpPut(mk, string(val))).Commit()
	}()
}

// runMove drains unit, copies its files to the target node with SQLite's
// backup API, has the target verify and install them, and switches the
// ownership in one etcd transaction. Requests for the unit wait meanwhile
// (see Request and serveRequest) and go to the new owner afterwards; on
// failure the unit stays here and they are served here.
func (n *Node) runMove(unit string, mv moveReq) (err error) {
	moved := false
	var release func()
	defer func() {
		n.mu.Lock()
		delete(n.handing, unit)
		ch := n.moving[unit]
		delete(n.moving, unit)
		n.publishMoving()
		n.mu.Unlock()
		n.refreshOwned()
		close(ch) // waiting requests look again: here, or at the new owner
		if release != nil {
			release() // held messages: delivered here, or forwarded
		}
		if moved {
			n.removeAll(actors.MustParsePath(unit).Dir(n.sys.Dir()))
			n.log.Info("subtree moved", "unit", unit, "to", mv.To)
		}
	}()
	p, err := actors.ParsePath(unit)
	if err != nil {
		return err
	}
	if p.Depth() != n.cfg.PlacementDepth {
		return fmt.Errorf("only subtrees at the placement depth (%d) move", n.cfg.PlacementDepth)
	}
	target, live := n.tab.node(mv.To)
	if !live || mv.To == n.cfg.Name {
		return fmt.Errorf("target node %q is not live", mv.To)
	}
	ctx, cancel := context.WithTimeout(n.ctx, moveTimeout)
	defer cancel()
	mk, ok := keyMove(n.cfg.Prefix, unit), keyOwner(n.cfg.Prefix, unit)
	if release, err = n.sys.Drain(ctx, unit); err != nil {
		return err
	}
	stage := filepath.Join(n.sys.Dir()+".moving", mv.ID)
	defer n.removeAll(stage)
	files, err := n.snapshot(ctx, p.Dir(n.sys.Dir()), stage)
	if err != nil {
		return err
	}
	in := install{Move: mv.ID, Unit: unit, Files: files}
	for i := range files {
		if err := n.sendFile(ctx, mv, target.Addr, stage, &files[i]); err != nil {
			n.callInstall(ctx, mv.To, target.Addr, opAbort, in) // best effort; its restart clears it too
			return err
		}
	}
	if err := n.callInstall(ctx, mv.To, target.Addr, opInstall, in); err != nil {
		n.callInstall(ctx, mv.To, target.Addr, opAbort, in)
		return fmt.Errorf("installing on %s: %w", mv.To, err)
	}
	// From here this node acknowledges nothing more for the unit.
	n.mu.Lock()
	n.handing[unit] = true
	n.mu.Unlock()
	n.refreshOwned()
	cur, err := n.cli.Get(ctx, ok)
	if err != nil || len(cur.Kvs) != 1 {
		n.callInstall(ctx, mv.To, target.Addr, opAbort, in)
		return fmt.Errorf("reading the owner: %v", err)
	}
	var o Owner
	if err := json.Unmarshal(cur.Kvs[0].Value, &o); err != nil || o.Node != n.cfg.Name {
		n.callInstall(ctx, mv.To, target.Addr, opAbort, in)
		return fmt.Errorf("the owner changed during the move: %+v", o)
	}
	next := Owner{Node: mv.To, Epoch: o.Epoch + 1}
	val, _ := json.Marshal(next)
	req, _ := json.Marshal(moveReq{To: mv.To, ID: mv.ID})
	resp, err := n.cli.Txn(ctx).If(
		clientv3.Compare(clientv3.ModRevision(ok), "=", cur.Kvs[0].ModRevision),
		clientv3.Compare(clientv3.Value(mk), "=", string(req)),
	).Then(clientv3.OpPut(ok, string(val)), clientv3.OpDelete(mk)).Commit()
	if err != nil {
		// The outcome is unknown: the table decides.
		if again, gerr := n.cli.Get(ctx, ok); gerr == nil && len(again.Kvs) == 1 &&
			json.Unmarshal(again.Kvs[0].Value, &o) == nil && o == next {
			n.tab.setOwner(unit, next, again.Kvs[0].ModRevision)
			moved = true
			return nil
		}
		n.callInstall(ctx, mv.To, target.Addr, opAbort, in)
		return fmt.Errorf("switching the owner: %w", err)
	}
	if !resp.Succeeded {
		n.callInstall(ctx, mv.To, target.Addr, opAbort, in)
		return errors.New("the move was called off, or the owner changed")
	}
	n.tab.setOwner(unit, next, resp.Header.Revision)
	moved = true
	return nil
}

// snapshot copies every part file of the subtree at dir into stage, each
// with SQLite's backup API (a consistent copy, checked), and returns them
// with their sizes and digests.
func (n *Node) snapshot(ctx context.Context, dir, stage string) ([]fileInfo, error) {
	var files []fileInfo
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) && path == dir {
			return filepath.SkipDir // never written: nothing to copy
		}
		if err != nil || d.IsDir() || d.Name() != actors.PartFileName {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		dst := filepath.Join(stage, rel)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		db, err := persistence.Open(ctx, path, &persistence.Options{ReadOnly: true})
		if err != nil {
			return err
		}
		err = db.Backup(ctx, dst)
		db.Close()
		if err != nil {
			return err
		}
		size, sum, err := digest(dst)
		if err != nil {
			return err
		}
		files = append(files, fileInfo{Name: filepath.ToSlash(rel), Size: size, SHA256: sum})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("copying the subtree's files: %w", err)
	}
	return files, nil
}

func digest(path string) (int64, string, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, "", err
	}
	defer f.Close()
	h := sha256.New()
	size, err := io.Copy(h, f)
	if err != nil {
		return 0, "", err
	}
	return size, hex.EncodeToString(h.Sum(nil)), nil
}

// sendFile sends one staged file to the target in chunks.
func (n *Node) sendFile(ctx context.Context, mv moveReq, addr, stage string, f *fileInfo) error {
	src, err := os.Open(filepath.Join(stage, filepath.FromSlash(f.Name)))
	if err != nil {
		return err
	}
	defer src.Close()
	buf := make([]byte, chunkSize)
	var off int64
	for {
		k, rerr := io.ReadFull(src, buf)
		if k > 0 || off == 0 {
			frame, err := encodeFrame(opChunk, chunk{Move: mv.ID, File: f.Name, Offset: off}, buf[:k])
			if err != nil {
				return err
			}
			r, _, err := n.call(ctx, mv.To, addr, frame, n.cfg.RequestTimeout)
			if err == nil {
				err = errorFromWire(mv.To, r)
			}
			if err != nil {
				return fmt.Errorf("sending %s to %s: %w", f.Name, mv.To, err)
			}
			off += int64(k)
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			return nil
		}
		if rerr != nil {
			return rerr
		}
	}
}

func (n *Node) callInstall(ctx context.Context, node, addr string, op byte, in install) error {
	if op == opAbort {
		// Called off: try even when ctx is done.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
	}
	frame, err := encodeFrame(op, in, nil)
	if err != nil {
		return err
	}
	r, _, err := n.call(ctx, node, addr, frame, n.cfg.RequestTimeout)
	if err == nil {
		err = errorFromWire(node, r)
	}
	return err
}

// incoming is where this node receives the files of the subtree being
// moved to it by move id.
func (n *Node) incoming(id string) (string, error) {
	if id == "" || !filepath.IsLocal(id) || filepath.Base(id) != id {
		return "", fmt.Errorf("cluster: bad move id %q", id)
	}
	return filepath.Join(n.sys.Dir()+".incoming", id), nil
}

// receiveChunk writes one chunk of a file being moved here.
func (n *Node) receiveChunk(c chunk, data []byte) error {
	stage, err := n.incoming(c.Move)
	if err != nil {
		return err
	}
	name := filepath.FromSlash(c.File)
	if !filepath.IsLocal(name) || c.Offset < 0 {
		return fmt.Errorf("cluster: bad file %q in a move", c.File)
	}
	path := filepath.Join(stage, name)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	_, err = f.WriteAt(data, c.Offset)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// install verifies the files received for a move (sizes, digests,
// SQLite's integrity check) and puts them where the subtree lives in this
// node's data directory. The node serves them once the table names it.
func (n *Node) install(in install) error {
	stage, err := n.incoming(in.Move)
	if err != nil {
		return err
	}
	p, err := actors.ParsePath(in.Unit)
	if err != nil {
		return err
	}
	if p.Depth() != n.cfg.PlacementDepth {
		return fmt.Errorf("%w: %s is not at the placement depth", ErrMove, in.Unit)
	}
	if _, owned := (*n.owned.Load())[in.Unit]; owned {
		return fmt.Errorf("%w: %s is already on node %s", ErrMove, in.Unit, n.cfg.Name)
	}
	ctx, cancel := context.WithTimeout(n.ctx, moveTimeout)
	defer cancel()
	for _, f := range in.Files {
		path := filepath.Join(stage, filepath.FromSlash(f.Name))
		if err := persistence.SyncFile(path); err != nil {
			return fmt.Errorf("%w: %s: %w", ErrMove, f.Name, err)
		}
		size, sum, err := digest(path)
		if err != nil || size != f.Size || sum != f.SHA256 {
			return fmt.Errorf("%w: %s arrived damaged (%d bytes, want %d; %v)", ErrMove, f.Name, size, f.Size, err)
		}
		if err := persistence.CheckFile(ctx, path); err != nil {
			return fmt.Errorf("%w: %s: %w", ErrMove, f.Name, err)
		}
		// CheckFile may leave an empty log and shared-memory file.
		os.Remove(path + "-shm")
		if fi, err := os.Stat(path + "-wal"); err == nil && fi.Size() == 0 {
			os.Remove(path + "-wal")
		}
	}
	// The directories of the copy, from the deepest up to the stage:
	// their entries (the files, the directories below) must survive a
	// power loss as the files do, before the table names this node.
	dirs := map[string]bool{}
	for _, f := range in.Files {
		for d := filepath.Dir(filepath.Join(stage, filepath.FromSlash(f.Name))); len(d) >= len(stage); d = filepath.Dir(d) {
			dirs[d] = true
		}
	}
	byDepth := make([]string, 0, len(dirs))
	for d := range dirs {
		byDepth = append(byDepth, d)
	}
	slices.SortFunc(byDepth, func(a, b string) int { return len(b) - len(a) })
	for _, d := range byDepth {
		if err := persistence.SyncFile(d); err != nil {
			return fmt.Errorf("%w: %s: %w", ErrMove, d, err)
		}
	}
	dst := p.Dir(n.sys.Dir())
	if _, err := os.Stat(dst); err == nil {
		// Left from an earlier time this node owned it: the copy that
		// arrived is newer.
		old := stage + ".old"
		if err := os.Rename(dst, old); err != nil {
			return err
		}
		n.removeAll(old)
	}
	if len(in.Files) == 0 {
		n.removeAll(stage)
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	if err := os.Rename(stage, dst); err != nil {
		return err
	}
	return persistence.SyncFile(filepath.Dir(dst))
}

// abortInstall throws away what a called-off move brought.
func (n *Node) abortInstall(in install) error {
	stage, err := n.incoming(in.Move)
	if err != nil {
		return err
	}
	n.removeAll(stage)
	p, err := actors.ParsePath(in.Unit)
	if err != nil || p.Depth() != n.cfg.PlacementDepth {
		return err
	}
	if _, owned := (*n.owned.Load())[in.Unit]; !owned {
		n.removeAll(p.Dir(n.sys.Dir()))
	}
	return nil
}
