package proxy

import "context"

// Backend programs a State into the kernel. Implementations render the
// State and decide nothing: every Kubernetes semantic is already in it.
type Backend interface {
	// Sync makes the kernel match s. Each call is atomic per kernel table:
	// when it returns an error, the rules programmed by the previous
	// successful Sync are still in place, unchanged, and the caller retries.
	// After the first Sync, implementations send only what changed.
	Sync(ctx context.Context, s *State) error
	// Cleanup removes everything this backend ever programmed, and nothing
	// of other owners.
	Cleanup(ctx context.Context) error
	// Render returns the canonical text of the rules Sync(s) programs, in
	// the syntax the kernel's own listing tool prints. It needs no kernel.
	Render(s *State) string
}
