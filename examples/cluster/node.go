package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/fractalrt/fractal/actors"
	"github.com/fractalrt/fractal/cluster"
	"github.com/fractalrt/fractal/persistence"
)

// The application: a bank whose branches ("bank/<branch>") are the unit of
// placement, each with its accounts ("bank/<branch>/<account>"), every
// account a SQLite file holding its balance.
type (
	// Deposit adds Amount to an account (after sleeping Sleep, which the
	// tests use to keep a write open) and replies the new balance.
	Deposit struct {
		Amount int
		Sleep  time.Duration
	}
	// Balance replies an account's balance.
	Balance struct{}
	// Transfer takes Amount from an account and sends it to the account
	// at To as a durable message (Context.SendDurable): stored in the
	// sender's file with the debit, delivered when To's node serves, even
	// if that node is down now.
	Transfer struct {
		To     string
		Amount int
	}
)

func init() {
	// Messages and replies that travel between nodes are registered.
	actors.MustRegisterMessage[Deposit]("bank.Deposit")
	actors.MustRegisterMessage[Balance]("bank.Balance")
	actors.MustRegisterMessage[Transfer]("bank.Transfer")
	actors.MustRegisterMessage[int]("int")
}

func bankKinds() []actors.Kind {
	account := actors.HandlerFunc(func(c *actors.Context, msg any) (any, error) {
		switch m := msg.(type) {
		case Deposit:
			time.Sleep(m.Sleep)
			var n int
			err := c.QueryRow(`UPDATE balance SET n = n + ? RETURNING n`, m.Amount).Scan(&n)
			return n, err
		case Balance:
			var n int
			err := c.QueryRow(`SELECT n FROM balance`).Scan(&n)
			return n, err
		case Transfer:
			var n int
			if err := c.QueryRow(`UPDATE balance SET n = n - ? RETURNING n`, m.Amount).Scan(&n); err != nil {
				return nil, err
			}
			return n, c.SendDurable(m.To, Deposit{Amount: m.Amount})
		}
		return nil, fmt.Errorf("%w: %T", actors.ErrUnknownMessage, msg)
	})
	route := actors.HandlerFunc(func(*actors.Context, any) (any, error) { return nil, nil })
	return []actors.Kind{
		{Name: "bank", Pattern: "bank", Handler: route},
		{Name: "branch", Pattern: "bank/*", Handler: route},
		{Name: "account", Pattern: "bank/*/*", Handler: account, Migrations: []persistence.Migration{
			{SQL: `CREATE TABLE balance (n INTEGER NOT NULL); INSERT INTO balance VALUES (0)`},
		}},
	}
}

// runNode runs one node of the cluster until SIGTERM or SIGINT, with a
// small HTTP API on a loopback address for the driver (and the tests): it
// prints "LISTEN <addr>" on stdout once the node has joined.
//
//	GET  /request?path=P&op=deposit|balance|transfer&amount=N&sleep=D&to=PATH
//	GET  /owners
//	GET  /local?path=P (whether this node serves P: it owns P's subtree, its
//	                    lease holds and no move of it is under way)
//	POST /move?unit=U&to=NODE
func runNode(f nodeFlags) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	level := slog.LevelWarn
	if os.Getenv("FRACTAL_LOG") == "debug" {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	tlsConfig, err := loadTLS(f.tlsDir)
	if err != nil {
		return err
	}
	etcdTLS, err := loadTLS(f.etcdTLSDir)
	if err != nil {
		return err
	}
	sctx, cancel := context.WithTimeout(ctx, f.startTimeout)
	defer cancel()
	n, err := cluster.Start(sctx, cluster.Config{
		Name:           f.name,
		DataDir:        f.data,
		Etcd:           strings.Split(f.etcd, ","),
		EtcdTLS:        etcdTLS,
		ListenAddr:     f.listen,
		AdvertiseAddr:  f.advertise,
		TLS:            tlsConfig,
		PlacementDepth: 2, // a branch and its accounts live together
		LeaseTTL:       f.ttl,
		RequestTimeout: 10 * time.Second,
		Logger:         log,
		Options:        actors.Options{Kinds: bankKinds(), Logger: log},
	})
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		n.Close(cctx)
	}()
	l, err := actors.ListenLoopback(f.http)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: nodeAPI(n), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(l)
	defer srv.Close()
	fmt.Printf("LISTEN %s\n", l.Addr())
	<-ctx.Done()
	return nil
}

// nodeFlags are the command line of a node (see main).
type nodeFlags struct {
	name, data, etcd, listen, http string
	advertise                      string // -advertise: the address other nodes dial, if not listen's
	ttl                            time.Duration
	tlsDir                         string // -tls: the remote transport's certificates
	etcdTLSDir                     string // -etcd-tls: the etcd client's certificates
	startTimeout                   time.Duration
}

// loadTLS reads the CA and the node's certificate from dir, or returns nil
// when dir is empty. The same files serve the remote transport (-tls: every
// node presents its certificate and accepts only peers signed by the CA)
// and the etcd client (-etcd-tls: the node presents its certificate to
// etcd and trusts only an etcd whose certificate the CA signed).
func loadTLS(dir string) (*tls.Config, error) {
	if dir == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "node.crt"), filepath.Join(dir, "node.key"))
	if err != nil {
		return nil, err
	}
	ca, err := os.ReadFile(filepath.Join(dir, "ca.crt"))
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, fmt.Errorf("%s: no certificate", filepath.Join(dir, "ca.crt"))
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		RootCAs:      pool,
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS13,
	}, nil
}

// apiResult is the JSON answer of /request.
type apiResult struct {
	Value int    `json:"value"`
	Error string `json:"error,omitempty"`
	Code  string `json:"code,omitempty"` // fenced, unavailable, moving, not_owner or other
	Node  string `json:"node"`           // the node that took the request
}

func nodeAPI(n *cluster.Node) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/request", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		var msg any = Balance{}
		amount, _ := strconv.Atoi(q.Get("amount"))
		switch q.Get("op") {
		case "deposit":
			sleep, _ := time.ParseDuration(q.Get("sleep"))
			msg = Deposit{Amount: amount, Sleep: sleep}
		case "transfer":
			msg = Transfer{To: q.Get("to"), Amount: amount}
		}
		ctx, cancel := context.WithTimeout(r.Context(), 20*time.Second)
		defer cancel()
		v, err := n.System().Request(ctx, q.Get("path"), msg)
		res := apiResult{Node: n.Name()}
		if err != nil {
			res.Error = err.Error()
			switch {
			case errors.Is(err, actors.ErrFenced):
				res.Code = "fenced"
			case errors.Is(err, cluster.ErrUnavailable):
				res.Code = "unavailable"
			case errors.Is(err, cluster.ErrMoving):
				res.Code = "moving"
			case errors.Is(err, cluster.ErrNotOwner):
				res.Code = "not_owner"
			default:
				res.Code = "other"
			}
		} else {
			res.Value = v.(int)
		}
		json.NewEncoder(w).Encode(res)
	})
	mux.HandleFunc("/local", func(w http.ResponseWriter, r *http.Request) {
		p, err := actors.ParsePath(r.URL.Query().Get("path"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		json.NewEncoder(w).Encode(n.Local(p))
	})
	mux.HandleFunc("/owners", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(n.Owners())
	})
	mux.HandleFunc("/move", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), time.Minute)
		defer cancel()
		if err := n.Move(ctx, r.URL.Query().Get("unit"), r.URL.Query().Get("to")); err != nil {
			http.Error(w, err.Error(), http.StatusConflict)
			return
		}
		fmt.Fprintln(w, "moved")
	})
	return mux
}
