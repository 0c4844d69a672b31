package controller

import (
	"context"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"k8s.io/klog/v2"

	"github.com/svcproxy/svcproxy/manifest"
	"github.com/svcproxy/svcproxy/proxy"
)

// ManifestSource reads the objects from a directory of manifests and
// re-reads it whenever a file in it changes (polled). A read that fails
// keeps the previous objects: nothing is lost to a half-written file
// system. Problems in the manifests are logged once per change.
type ManifestSource struct {
	dir  string
	poll time.Duration

	mu      sync.Mutex
	inputs  proxy.Inputs
	loaded  chan struct{}
	printed string // fingerprint of the last load
}

// NewManifestSource watches dir every poll interval.
func NewManifestSource(dir string, poll time.Duration) *ManifestSource {
	return &ManifestSource{dir: dir, poll: poll, loaded: make(chan struct{})}
}

// Start implements Source.
func (s *ManifestSource) Start(ctx context.Context, notify func(string)) error {
	if _, err := fingerprint(s.dir); err != nil {
		return fmt.Errorf("--manifests %s: %w", s.dir, err)
	}
	go func() {
		first := true
		t := time.NewTicker(s.poll)
		defer t.Stop()
		for {
			if s.reload() {
				if first {
					close(s.loaded)
					first = false
				}
				notify("service")
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return nil
}

// reload reads the directory if its fingerprint changed; it reports
// whether new objects were taken.
func (s *ManifestSource) reload() bool {
	fp, err := fingerprint(s.dir)
	if err != nil {
		klog.ErrorS(err, "Reading manifests; keeping the previous objects", "dir", s.dir)
		return false
	}
	if fp == s.printed {
		return false
	}
	objs, probs, err := manifest.Load(s.dir)
	if err != nil {
		klog.ErrorS(err, "Reading manifests; keeping the previous objects", "dir", s.dir)
		return false
	}
	for _, p := range probs {
		klog.InfoS("Manifest problem", "problem", p.String())
	}
	s.mu.Lock()
	s.inputs = proxy.Inputs{Services: objs.Services, EndpointSlices: objs.EndpointSlices, Nodes: objs.Nodes}
	s.printed = fp
	s.mu.Unlock()
	return true
}

// fingerprint names every manifest file with its size and modification
// time.
func fingerprint(dir string) (string, error) {
	var b strings.Builder
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "%s %d %d\n", path, info.Size(), info.ModTime().UnixNano())
		return nil
	})
	return b.String(), err
}

// WaitForSync implements Source: true once the directory has been read.
func (s *ManifestSource) WaitForSync(ctx context.Context) bool {
	select {
	case <-s.loaded:
		return true
	case <-ctx.Done():
		return false
	}
}

// Inputs implements Source.
func (s *ManifestSource) Inputs() proxy.Inputs {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.inputs
}
