package actors

// SetDeleteHook has s call fn at each step of its deletions, with the
// step's name (see System.delete). Call it before any deletion.
func SetDeleteHook(s *System, fn func(step string)) { s.deletes.hook = fn }
