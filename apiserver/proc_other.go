//go:build !linux

package apiserver

import "syscall"

// sysProcAttr is nil off Linux: Require skips there, this only keeps the
// package building.
func sysProcAttr() *syscall.SysProcAttr { return nil }
