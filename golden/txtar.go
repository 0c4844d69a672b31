package golden

import (
	"bytes"
	"strings"
)

// A minimal reader and writer of the txtar format, with the semantics of
// golang.org/x/tools/txtar (kept here to add no dependency): an archive is
// a comment followed by files, each introduced by a marker line
// "-- NAME --". Every part ends with a newline once written.

type archiveFile struct {
	name string
	data []byte
}

var (
	newlineMarker = []byte("\n-- ")
	marker        = []byte("-- ")
	markerEnd     = []byte(" --")
)

// parseArchive splits data into its comment and files.
func parseArchive(data []byte) (comment []byte, files []archiveFile) {
	var name string
	comment, name, data = findFileMarker(data)
	for name != "" {
		f := archiveFile{name: name}
		f.data, name, data = findFileMarker(data)
		files = append(files, f)
	}
	return comment, files
}

// formatArchive is the inverse of parseArchive for parts that end with a
// newline (it adds one to any that does not).
func formatArchive(comment []byte, files []archiveFile) []byte {
	var b bytes.Buffer
	b.Write(fixNL(comment))
	for _, f := range files {
		b.WriteString("-- " + f.name + " --\n")
		b.Write(fixNL(f.data))
	}
	return b.Bytes()
}

// findFileMarker returns the data before the next marker line, the name in
// that marker, and the data after it; no name when there is no marker.
func findFileMarker(data []byte) (before []byte, name string, after []byte) {
	var i int
	for {
		if name, after = isMarker(data[i:]); name != "" {
			return data[:i], name, after
		}
		j := bytes.Index(data[i:], newlineMarker)
		if j < 0 {
			return fixNL(data), "", nil
		}
		i += j + 1
	}
}

// isMarker reports whether data starts with a marker line, and returns its
// name and the data after the line.
func isMarker(data []byte) (name string, after []byte) {
	if !bytes.HasPrefix(data, marker) {
		return "", nil
	}
	if i := bytes.IndexByte(data, '\n'); i >= 0 {
		data, after = data[:i], data[i+1:]
	}
	if !bytes.HasSuffix(data, markerEnd) || len(data) < len(marker)+len(markerEnd) {
		return "", nil
	}
	return strings.TrimSpace(string(data[len(marker) : len(data)-len(markerEnd)])), after
}

func fixNL(data []byte) []byte {
	if len(data) == 0 || data[len(data)-1] == '\n' {
		return data
	}
	return append(bytes.Clone(data), '\n')
}
