package apiserver

import "syscall"

// sysProcAttr puts the child in its own process group and has the kernel
// SIGKILL it when the thread that started it (kept alive for the child's
// lifetime, see startProc) dies, i.e. when the test process dies.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
