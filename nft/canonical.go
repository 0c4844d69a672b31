package nft

import (
	"fmt"
	"slices"
	"strings"
)

// Canonical rewrites a listing printed by `nft list table` or `nft list
// ruleset` into the canonical form Render prints, so that the two can be
// compared byte for byte: tables, sets and chains in name order, set
// elements sorted and wrapped as nft wraps them, the contents of dynamic
// sets (affinity entries, which packets create) and `# handle` comments
// removed. Only svcproxy's tables are kept.
func Canonical(listing string) (string, error) {
	lines := strings.Split(strings.ReplaceAll(listing, "\r\n", "\n"), "\n")
	type tbl struct{ header, body string }
	var tables []tbl
	for i := 0; i < len(lines); i++ {
		l := stripHandle(lines[i])
		if !strings.HasPrefix(l, "table ") {
			if strings.TrimSpace(l) != "" {
				return "", fmt.Errorf("line %d: expected a table, got %q", i+1, l)
			}
			continue
		}
		end := i + 1
		for end < len(lines) && lines[end] != "}" {
			end++
		}
		if end == len(lines) {
			return "", fmt.Errorf("line %d: table not closed", i+1)
		}
		body, err := canonicalBlocks(lines[i+1 : end])
		if err != nil {
			return "", fmt.Errorf("%s: %w", strings.TrimSuffix(l, " {"), err)
		}
		if fields := strings.Fields(l); len(fields) >= 3 && fields[2] == TableName {
			tables = append(tables, tbl{header: l, body: body})
		}
		i = end
	}
	slices.SortFunc(tables, func(a, b tbl) int { return strings.Compare(a.header, b.header) })
	var b strings.Builder
	for _, t := range tables {
		fmt.Fprintf(&b, "%s\n%s}\n", t.header, t.body)
	}
	return b.String(), nil
}

func stripHandle(l string) string {
	if i := strings.Index(l, " # handle "); i >= 0 {
		return l[:i]
	}
	return l
}

// canonicalBlocks sorts the set/map/chain blocks of one table body.
func canonicalBlocks(lines []string) (string, error) {
	type block struct {
		kind, name, text string
	}
	var blocks []block
	for i := 0; i < len(lines); i++ {
		l := stripHandle(lines[i])
		if strings.TrimSpace(l) == "" {
			continue
		}
		f := strings.Fields(l)
		if !strings.HasPrefix(l, "\t") || strings.HasPrefix(l, "\t\t") || len(f) != 3 || f[2] != "{" {
			return "", fmt.Errorf("unexpected line %q", l)
		}
		end := i + 1
		for end < len(lines) && lines[end] != "\t}" {
			end++
		}
		if end == len(lines) {
			return "", fmt.Errorf("%s %s not closed", f[0], f[1])
		}
		var body string
		if f[0] == "chain" {
			var b strings.Builder
			for _, cl := range lines[i+1 : end] {
				b.WriteString(stripHandle(cl))
				b.WriteByte('\n')
			}
			body = b.String()
		} else {
			body = canonicalSet(lines[i+1 : end])
		}
		kind := "0set"
		if f[0] == "chain" {
			kind = "1chain"
		}
		blocks = append(blocks, block{kind: kind, name: f[1], text: fmt.Sprintf("\t%s %s {\n%s\t}\n", f[0], f[1], body)})
		i = end
	}
	slices.SortFunc(blocks, func(a, b block) int {
		if c := strings.Compare(a.kind, b.kind); c != 0 {
			return c
		}
		return strings.Compare(a.name, b.name)
	})
	texts := make([]string, len(blocks))
	for i, b := range blocks {
		texts[i] = b.text
	}
	return strings.Join(texts, "\n"), nil
}

// canonicalSet re-flows a set's elements, or drops them for a dynamic set.
func canonicalSet(lines []string) string {
	var b strings.Builder
	dynamic := false
	perLine := 1
	var elems []string
	for i := 0; i < len(lines); i++ {
		l := strings.TrimSpace(lines[i])
		switch {
		case strings.HasPrefix(l, "elements = {"):
			all := l
			for !strings.HasSuffix(strings.TrimSpace(all), "}") && i+1 < len(lines) {
				i++
				all += " " + strings.TrimSpace(lines[i])
			}
			all = strings.TrimSuffix(strings.TrimPrefix(all, "elements = {"), "}")
			for _, e := range strings.Split(all, ",") {
				if e = strings.TrimSpace(e); e != "" {
					elems = append(elems, e)
				}
			}
			continue
		case l == "type ipv4_addr":
			perLine = 2
		case strings.HasPrefix(l, "flags ") && strings.Contains(l, "dynamic"):
			dynamic = true
		}
		b.WriteString(lines[i])
		b.WriteByte('\n')
	}
	if len(elems) > 0 && !dynamic {
		b.WriteString(formatElements(elems, perLine))
	}
	return b.String()
}
