package proxy

// DiffAll is Diff without a Builder's hint: the full comparison.
func DiffAll(s, prev *State, f Family) FamilyDiff {
	c := *s
	c.delta = nil
	return c.Diff(prev, f)
}

// HasDelta reports whether s carries a Builder's hint for Diff.
func HasDelta(s *State) bool { return s.delta != nil }
