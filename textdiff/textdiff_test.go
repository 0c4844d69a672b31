package textdiff

import (
	"math/rand/v2"
	"strings"
	"testing"
)

// The diff's operations must rebuild both inputs exactly.
func TestMyersRebuildsBothSides(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	words := []string{"a", "b", "c", "d"}
	for range 300 {
		var a, b []string
		for range r.IntN(12) {
			a = append(a, words[r.IntN(4)])
		}
		for range r.IntN(12) {
			b = append(b, words[r.IntN(4)])
		}
		var ra, rb []string
		changes := 0
		for _, o := range myers(a, b) {
			if o.kind != '+' {
				ra = append(ra, o.text)
			}
			if o.kind != '-' {
				rb = append(rb, o.text)
			}
			if o.kind != ' ' {
				changes++
			}
		}
		if strings.Join(ra, ",") != strings.Join(a, ",") || strings.Join(rb, ",") != strings.Join(b, ",") {
			t.Fatalf("a=%v b=%v: rebuilt %v %v", a, b, ra, rb)
		}
		if changes > len(a)+len(b) {
			t.Fatalf("too many changes")
		}
	}
	got := Unified("x", "y", "1\n2\n3\n4\n5\n6\n7\n8\n9\n", "1\n2\n3\n4\nfive\n6\n7\n8\n9\n")
	want := "--- x\n+++ y\n@@ -2,7 +2,7 @@\n 2\n 3\n 4\n-5\n+five\n 6\n 7\n 8\n"
	if got != want {
		t.Errorf("unified:\n%s\nwant:\n%s", got, want)
	}
}
