package dptest

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/svcproxy/svcproxy/sandbox"
)

// SCTP has no support in package net: these use one-to-one style SCTP
// sockets through syscalls, which behave like TCP ones.

// sctpListener accepts SCTP associations on both families.
type sctpListener struct{ fd int }

func listenSCTP(port int) (net.Listener, error) {
	fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, unix.IPPROTO_SCTP)
	if err != nil {
		return nil, err
	}
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 0)
	if err := unix.Bind(fd, &unix.SockaddrInet6{Port: port}); err != nil {
		unix.Close(fd)
		return nil, err
	}
	if err := unix.Listen(fd, 64); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return &sctpListener{fd: fd}, nil
}

func (l *sctpListener) Accept() (net.Conn, error) {
	nfd, sa, err := unix.Accept(l.fd)
	if err != nil {
		return nil, err
	}
	return &sctpConn{fd: nfd, remote: sockaddrAddr(sa)}, nil
}

// Close wakes a blocked Accept (shutdown does; close alone does not).
func (l *sctpListener) Close() error {
	_ = unix.Shutdown(l.fd, unix.SHUT_RDWR)
	return unix.Close(l.fd)
}

func (l *sctpListener) Addr() net.Addr { return &net.TCPAddr{} }

func sockaddrAddr(sa unix.Sockaddr) netip.Addr {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrFrom4(a.Addr)
	case *unix.SockaddrInet6:
		return netip.AddrFrom16(a.Addr).Unmap()
	}
	return netip.Addr{}
}

// sctpConn implements just what serveStream uses.
type sctpConn struct {
	net.Conn
	fd     int
	remote netip.Addr
}

func (c *sctpConn) Write(b []byte) (int, error) { return unix.Write(c.fd, b) }
func (c *sctpConn) Close() error                { return unix.Close(c.fd) }
func (c *sctpConn) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: c.remote.AsSlice()}
}

// sctpAsk connects to addr from the namespace and reads one line.
func sctpAsk(from *sandbox.NS, addr netip.AddrPort, timeout time.Duration) (string, error) {
	var fd int
	err := from.Do(func() error {
		af := unix.AF_INET
		var sa unix.Sockaddr = &unix.SockaddrInet4{Port: int(addr.Port()), Addr: addr.Addr().As4()}
		if addr.Addr().Is6() {
			af = unix.AF_INET6
			sa = &unix.SockaddrInet6{Port: int(addr.Port()), Addr: addr.Addr().As16()}
		}
		var err error
		fd, err = unix.Socket(af, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, unix.IPPROTO_SCTP)
		if err != nil {
			return err
		}
		tv := unix.NsecToTimeval(timeout.Nanoseconds())
		_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv)
		_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
		if err := unix.Connect(fd, sa); err != nil {
			unix.Close(fd)
			return err
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	defer unix.Close(fd)
	buf := make([]byte, 256)
	n, err := unix.Read(fd, buf)
	if err != nil {
		return "", err
	}
	if n <= 0 {
		return "", fmt.Errorf("sctp: connection closed without an answer")
	}
	return strings.TrimSpace(string(buf[:n])), nil
}

// SCTPAvailable reports whether the kernel can open SCTP sockets here.
func SCTPAvailable() bool {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, unix.IPPROTO_SCTP)
	if err != nil {
		return false
	}
	unix.Close(fd)
	return true
}
