package golden

import "github.com/svcproxy/svcproxy/textdiff"

// Diff returns a unified diff (3 lines of context) from want to got, with
// "--- want" and "+++ got" headers; "" when they are equal.
func Diff(want, got string) string { return textdiff.Unified("want", "got", want, got) }
