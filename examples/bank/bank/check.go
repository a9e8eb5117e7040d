package bank

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/fractalrt/fractal/actors"
)

// A Report is what Check found.
type Report struct {
	Accounts  int
	Money     int64 // the sum of the balances
	Deposits  int64 // the sum of the deposits
	Transfers int   // transfers out, all accounts
	Done      int
	Failed    int
	Pending   int

	// Anomalies lists every broken invariant; empty when the bank is
	// consistent.
	Anomalies []string
}

// Check audits the accounts (paths of the account kind) through sys and
// verifies, once no transfer is pending: money is conserved (balances sum to
// deposits), no ledger entry was applied twice, every transfer is either
// credited once or refunded once, every ID in acknowledged was applied
// (a transfer known to its source), and every branch's total equals the sum
// of its accounts' balances.
func Check(ctx context.Context, sys *actors.System, accounts []string, acknowledged []string) (Report, error) {
	var r Report
	audits := make(map[string]AccountAudit, len(accounts))
	branches := map[string]int64{}
	for _, path := range accounts {
		v, err := sys.Request(ctx, path, Audit{})
		if err != nil {
			return r, fmt.Errorf("bank: audit of %s: %w", path, err)
		}
		a := v.(AccountAudit)
		audits[path] = a
		r.Accounts++
		r.Money += a.Balance
		r.Deposits += a.Deposits
		r.Transfers += len(a.Transfers)
		r.Done, r.Failed, r.Pending = r.Done+a.Done, r.Failed+a.Failed, r.Pending+a.Pending
		p := actors.MustParsePath(path)
		branches[p.Parent().String()] += a.Balance
	}
	bad := func(format string, args ...any) { r.Anomalies = append(r.Anomalies, fmt.Sprintf(format, args...)) }
	if r.Pending == 0 && r.Money != r.Deposits {
		bad("money not conserved: balances sum to %d, deposits to %d", r.Money, r.Deposits)
	}
	known := map[string]bool{}
	for src, a := range audits {
		for id, t := range a.Transfers {
			known[id] = true
			if n := a.Ledger[id+" debit"]; n != 1 {
				bad("transfer %s debited %d times at %s", id, n, src)
			}
			dst, ok := audits[t.To]
			credits := 0
			if ok {
				credits = dst.Ledger[id+" credit"]
			}
			refunds := a.Ledger[id+" refund"]
			switch t.State {
			case "done":
				if credits != 1 || refunds != 0 {
					bad("transfer %s done with %d credits and %d refunds", id, credits, refunds)
				}
			case "failed":
				if credits != 0 || refunds != 1 {
					bad("transfer %s failed with %d credits and %d refunds", id, credits, refunds)
				}
			case "pending":
				if refunds != 0 || credits > 1 {
					bad("transfer %s pending with %d credits and %d refunds", id, credits, refunds)
				}
			}
		}
	}
	for _, id := range acknowledged {
		if !known[id] {
			bad("acknowledged transfer %s was not applied", id)
		}
	}
	names := make([]string, 0, len(branches))
	for b := range branches {
		names = append(names, b)
	}
	slices.Sort(names)
	for _, b := range names {
		v, err := sys.Request(ctx, b, Audit{})
		if err != nil {
			return r, fmt.Errorf("bank: audit of %s: %w", b, err)
		}
		if total := v.(int64); r.Pending == 0 && total != branches[b] {
			bad("branch %s total %d, its accounts hold %d", b, total, branches[b])
		}
	}
	return r, nil
}

// String summarises r on one line.
func (r Report) String() string {
	s := fmt.Sprintf("accounts=%d money=%d deposits=%d transfers=%d done=%d failed=%d pending=%d anomalies=%d",
		r.Accounts, r.Money, r.Deposits, r.Transfers, r.Done, r.Failed, r.Pending, len(r.Anomalies))
	if len(r.Anomalies) > 0 {
		s += "\n  " + strings.Join(r.Anomalies[:min(len(r.Anomalies), 20)], "\n  ")
	}
	return s
}
