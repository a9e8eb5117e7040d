package actors

// SetDeleteHook has s call fn at each step of its deletions, with the
// step's name (see System.delete). Call it before any deletion.
func SetDeleteHook(s *System, fn func(step string)) { s.deletes.hook = fn }

// SetTrace has s call fn when a part's file opens ("open") or closes
// ("close"), in order, on the part's goroutine. Call it before any part
// runs.
func SetTrace(s *System, fn func(event string, p Path)) { s.trace = fn }
