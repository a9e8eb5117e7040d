// Package inspect serves a live view of a fractal System: a web page
// showing the tree of parts (expand and collapse, each part's state,
// refreshed every two seconds) and the JSON API behind it. The page is
// self-contained (no CDN): it works offline.
//
// It is read-only unless Options.AllowActions is set, which enables the
// actions it offers: restarting a part, redriving or discarding a dead
// letter.
//
//	mux.Handle("/inspect/", http.StripPrefix("/inspect", inspect.Handler(sys, nil)))
//
// The API:
//
//	GET  /api/children?path=P   the children of P ("" for the root), each a PartInfo
//	GET  /api/part?path=P       one part's PartInfo
//	POST /api/restart?path=P    restart an active part (AllowActions only; else 403)
//	GET  /api/dead?path=P       P's dead letters (durable messages it could not deliver), oldest first
//	POST /api/dead/redrive?path=P&id=N   send P's dead letter N again (AllowActions only)
//	POST /api/dead/discard?path=P&id=N   drop P's dead letter N (AllowActions only)
package inspect

import (
	_ "embed"
	"encoding/json"
	"errors"
	"net/http"
	"sort"
	"strconv"

	"github.com/fractalrt/fractal/actors"
)

// Options configure the handler; nil means read-only.
type Options struct {
	// AllowActions enables the actions that change state (restarting a
	// part). Off by default: the page and the API then only read.
	AllowActions bool

	// MaxChildren bounds the children listed per request (the rest are
	// counted, not listed). Zero means 1,000.
	MaxChildren int
}

//go:embed page.html
var page []byte

// Handler returns the inspection handler for sys.
func Handler(sys *actors.System, opts *Options) http.Handler {
	o := Options{}
	if opts != nil {
		o = *opts
	}
	if o.MaxChildren <= 0 {
		o.MaxChildren = 1000
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Content-Security-Policy", "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'")
		w.Write(page)
	})
	mux.HandleFunc("GET /api/children", func(w http.ResponseWriter, r *http.Request) {
		path := r.URL.Query().Get("path")
		names, err := sys.Children(r.Context(), path)
		if err != nil {
			writeError(w, err)
			return
		}
		sort.Strings(names)
		out := struct {
			Parts []actors.PartInfo `json:"parts"`
			More  int               `json:"more"`
		}{Parts: []actors.PartInfo{}}
		for i, name := range names {
			if i >= o.MaxChildren {
				out.More = len(names) - i
				break
			}
			child := name
			if path != "" {
				child = path + "/" + name
			}
			info, err := sys.Info(r.Context(), child)
			if err != nil {
				info = actors.PartInfo{Path: child, Name: name, LastError: err.Error()}
			}
			out.Parts = append(out.Parts, info)
		}
		writeJSON(w, out)
	})
	mux.HandleFunc("GET /api/part", func(w http.ResponseWriter, r *http.Request) {
		info, err := sys.Info(r.Context(), r.URL.Query().Get("path"))
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, info)
	})
	mux.HandleFunc("POST /api/restart", func(w http.ResponseWriter, r *http.Request) {
		if !o.AllowActions {
			http.Error(w, "actions are disabled (inspect.Options.AllowActions)", http.StatusForbidden)
			return
		}
		if err := sys.Restart(r.Context(), r.URL.Query().Get("path")); err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, map[string]bool{"restarted": true})
	})
	mux.HandleFunc("GET /api/dead", func(w http.ResponseWriter, r *http.Request) {
		letters, err := sys.DeadLetters(r.Context(), r.URL.Query().Get("path"))
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, map[string]any{"letters": letters})
	})
	mux.HandleFunc("POST /api/dead/{op}", func(w http.ResponseWriter, r *http.Request) {
		if !o.AllowActions {
			http.Error(w, "actions are disabled (inspect.Options.AllowActions)", http.StatusForbidden)
			return
		}
		q := r.URL.Query()
		id, err := strconv.ParseInt(q.Get("id"), 10, 64)
		if err != nil {
			http.Error(w, "id: "+err.Error(), http.StatusBadRequest)
			return
		}
		switch r.PathValue("op") {
		case "redrive":
			err = sys.RedriveDeadLetter(r.Context(), q.Get("path"), id)
		case "discard":
			err = sys.DiscardDeadLetter(r.Context(), q.Get("path"), id)
		default:
			http.NotFound(w, r)
			return
		}
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, map[string]bool{r.PathValue("op"): true})
	})
	mux.HandleFunc("GET /api/config", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, map[string]bool{"actions": o.AllowActions})
	})
	return mux
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	switch {
	case errors.Is(err, actors.ErrInvalidPath), errors.Is(err, actors.ErrNoKind):
		code = http.StatusBadRequest
	case errors.Is(err, actors.ErrNoDeadLetter):
		code = http.StatusNotFound
	case errors.Is(err, actors.ErrNotActive):
		code = http.StatusConflict
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
}
