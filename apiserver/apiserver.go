// Package apiserver runs a real kube-apiserver, backed by a real etcd, for
// integration tests.
//
// Start launches etcd and kube-apiserver as child processes of the test,
// bound to 127.0.0.1 on free ports picked at run time, and stops them (by
// PID) when the test ends. Each Start is independent: its own etcd data dir,
// certificates and ports; both come up in a few seconds.
//
// The kube-apiserver binary is built from source by hack/kube-apiserver.sh
// (no prebuilt downloads) and cached in ${SVCPROXY_CACHE:-/var/cache/svcproxy};
// a cold build takes ~8 minutes on 2 cores, a cached one milliseconds. etcd
// is Debian's etcd-server (/usr/bin/etcd), which the script installs when it
// runs as root. SVCPROXY_KUBE_APISERVER and SVCPROXY_ETCD name binaries to
// use instead.
//
// Only the API server runs: there is no kube-controller-manager, scheduler or
// kubelet. Nothing creates EndpointSlices, service accounts or namespaces'
// defaults, and deleted namespaces stay Terminating, so tests create the
// objects they need (Services, EndpointSlices, Nodes) directly.
//
// For disruption tests: WithArgs adds kube-apiserver flags (e.g.
// --watch-cache=false), Stop and Restart make an outage, a Proxy partitions
// one client (a daemon) from the API server while the test keeps using it,
// and CompactEtcd drops the history that watches resume from, so that the
// API server answers them with 410 Gone.
//
// Tests that cannot run (missing etcd, failed build, unsupported OS) skip,
// except under CI=true, where they fail — an integration test never passes
// by not running.
package apiserver

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/svcproxy/svcproxy/sandbox"
)

// ServiceClusterIPRange is the --service-cluster-ip-range of every Server.
const ServiceClusterIPRange = "10.96.0.0/12"

// ServiceAccountIssuer is the --service-account-issuer (and --api-audiences)
// of every Server.
const ServiceAccountIssuer = "https://kubernetes.default.svc"

// Timeouts; generous because a loaded 2-core CI machine is slow.
const (
	etcdReadyTimeout      = 60 * time.Second
	apiserverReadyTimeout = 120 * time.Second
	stopGracePeriod       = 15 * time.Second // SIGTERM → SIGKILL
	killWait              = 10 * time.Second // SIGKILL → give up
	portAttempts          = 3                // retries when a picked port was taken meanwhile
)

// TB is the part of testing.TB the package needs. *testing.T and
// *testing.B implement it, and so can a program (the latency benchmark,
// cmd/svcproxy-bench) that runs an API server outside of tests.
type TB interface {
	sandbox.TB
	Logf(format string, args ...any)
	Failed() bool
	TempDir() string
}

var _ TB = testing.TB(nil)

// Server is a running etcd + kube-apiserver pair owned by one test.
//
// All methods are safe for concurrent use.
type Server struct {
	// URL is the API server's base URL, https://127.0.0.1:<port>. It does
	// not change across Stop/Restart.
	URL string

	t          TB
	dir        string // t.TempDir(): certs, token file, kubeconfig, logs, etcd data
	apiBin     string
	etcdBin    string
	etcdURL    string
	port       int
	token      string
	caPEM      []byte
	kubeconfig string
	logs       string

	// ns, when not nil, is the network namespace etcd and kube-apiserver
	// run in (StartInNetNS); the test reaches them through it.
	ns *sandbox.NS
	// extraArgs are kube-apiserver flags added by WithArgs.
	extraArgs []string

	mu        sync.Mutex
	etcd      *proc
	apiserver *proc
	starts    int // apiserver starts, for log markers
}

// binaries is the outcome of locating/building the binaries, once per test
// process (the build script is serialised by a lock across processes).
var binaries struct {
	once            sync.Once
	apiserver, etcd string
	err             error
}

// Require skips (or, under CI=true, fails) the test unless a kube-apiserver
// and etcd can run here. It runs hack/kube-apiserver.sh (found by walking up
// from the working directory to the go.mod next to it), which builds and
// caches kube-apiserver and installs etcd when needed; the result is
// remembered for the rest of the test process, so only the first call can
// take long (a cold build takes ~8 minutes; cached, milliseconds).
func Require(t TB) {
	t.Helper()
	if _, _, err := ensureBinaries(); err != nil {
		msg := "apiserver: cannot run a kube-apiserver: " + err.Error()
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg + " (set CI=true to make this a failure)")
	}
}

func ensureBinaries() (apiserverBin, etcdBin string, err error) {
	b := &binaries
	b.once.Do(func() {
		if runtime.GOOS != "linux" {
			b.err = fmt.Errorf("needs linux, this is %s", runtime.GOOS)
			return
		}
		b.apiserver, b.err = findAPIServer()
		if b.err != nil {
			return
		}
		b.etcd, b.err = findEtcd()
	})
	return b.apiserver, b.etcd, b.err
}

func findAPIServer() (string, error) {
	if p := os.Getenv("SVCPROXY_KUBE_APISERVER"); p != "" {
		if err := isExecutable(p); err != nil {
			return "", fmt.Errorf("SVCPROXY_KUBE_APISERVER: %w", err)
		}
		return p, nil
	}
	script, err := findScript()
	if err != nil {
		return "", err
	}
	// Build output goes to the test's stderr as it happens (a cold build is
	// long; silence would look like a hang) and is kept for the error.
	var stdout, stderr bytes.Buffer
	cmd := exec.Command("bash", script)
	cmd.Stdout = &stdout
	cmd.Stderr = io.MultiWriter(&stderr, os.Stderr)
	if err := cmd.Run(); err != nil {
		hint := ""
		if os.Geteuid() != 0 {
			hint = " (not root: the cache dir or apt may need root; run hack/kube-apiserver.sh as root or set SVCPROXY_CACHE)"
		}
		return "", fmt.Errorf("%s failed: %v%s\n%s", script, err, hint, lastLines(stderr.Bytes(), 20))
	}
	p := strings.TrimSpace(stdout.String())
	if i := strings.LastIndexByte(p, '\n'); i >= 0 {
		p = p[i+1:]
	}
	if err := isExecutable(p); err != nil {
		return "", fmt.Errorf("%s printed %q: %w", script, p, err)
	}
	return p, nil
}

// findScript walks up from the working directory (a test runs in its
// package's directory) to the first directory with go.mod and
// hack/kube-apiserver.sh.
func findScript() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		script := filepath.Join(dir, "hack", "kube-apiserver.sh")
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			if _, err := os.Stat(script); err == nil {
				return script, nil
			}
		}
		if filepath.Dir(dir) == dir {
			return "", fmt.Errorf("no go.mod with hack/kube-apiserver.sh above %s", wd)
		}
	}
}

func findEtcd() (string, error) {
	if p := os.Getenv("SVCPROXY_ETCD"); p != "" {
		if err := isExecutable(p); err != nil {
			return "", fmt.Errorf("SVCPROXY_ETCD: %w", err)
		}
		return p, nil
	}
	if isExecutable("/usr/bin/etcd") == nil {
		return "/usr/bin/etcd", nil
	}
	if p, err := exec.LookPath("etcd"); err == nil {
		return p, nil
	}
	hint := ""
	if os.Geteuid() != 0 {
		hint = " (not root, so hack/kube-apiserver.sh could not install it)"
	}
	return "", errors.New("etcd not found: install Debian package etcd-server (apt-get install etcd-server)" + hint)
}

func isExecutable(p string) error {
	st, err := os.Stat(p)
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() || st.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("%s is not an executable file", p)
	}
	return nil
}

// Start runs etcd and kube-apiserver for the test and returns once the API
// server's /readyz answers 200. It calls Require first (skipping or, under
// CI=true, failing the test when they cannot run) and fails the test, with
// the tail of the processes' logs, when they do not come up.
//
// A t.Cleanup stops both processes by PID (SIGTERM, then SIGKILL after 15s)
// and waits for them to exit before the temporary directory (certificates,
// etcd data, logs) is removed. When the test failed, the cleanup logs the
// tail of both logs first.
func Start(t TB, opts ...Option) *Server {
	t.Helper()
	return start(t, nil, opts)
}

// StartInNetNS is Start with etcd and kube-apiserver running inside the
// network namespace ns, bound to its 127.0.0.1: a daemon started in the
// same namespace reaches them through Kubeconfig, and the test's clients
// (RESTConfig, Client) dial into the namespace.
func StartInNetNS(t TB, ns *sandbox.NS, opts ...Option) *Server {
	t.Helper()
	return start(t, ns, opts)
}

func start(t TB, ns *sandbox.NS, opts []Option) *Server {
	t.Helper()
	Require(t)
	apiBin, etcdBin, _ := ensureBinaries()

	// TempDir before Cleanup: cleanups run last-registered first, so the
	// processes are stopped before the directory is removed.
	dir := t.TempDir()
	s := &Server{t: t, dir: dir, apiBin: apiBin, etcdBin: etcdBin, logs: filepath.Join(dir, "logs"), ns: ns}
	for _, o := range opts {
		o(s)
	}
	t.Cleanup(s.cleanup)
	if err := s.setup(); err != nil {
		t.Fatalf("apiserver: %v", err)
	}
	if err := s.startEtcd(); err != nil {
		t.Fatalf("apiserver: %v", err)
	}
	if err := s.startAPIServer(true); err != nil {
		t.Fatalf("apiserver: %v", err)
	}
	return s
}

// setup writes credentials, certificates and the service-account key.
func (s *Server) setup() error {
	for _, d := range []string{s.logs, filepath.Join(s.dir, "pki")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	tok := make([]byte, 24)
	if _, err := rand.Read(tok); err != nil {
		return err
	}
	s.token = hex.EncodeToString(tok)
	// token,user,uid,"group1,group2"
	if err := os.WriteFile(s.path("pki/tokens.csv"),
		[]byte(s.token+`,svcproxy-test-admin,svcproxy-test-admin,"system:masters"`+"\n"), 0o600); err != nil {
		return err
	}
	certPEM, keyPEM, err := selfSignedServingCert()
	if err != nil {
		return err
	}
	s.caPEM = certPEM
	if err := os.WriteFile(s.path("pki/serving.crt"), certPEM, 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(s.path("pki/serving.key"), keyPEM, 0o600); err != nil {
		return err
	}
	saKey, err := ecKeyPEM()
	if err != nil {
		return err
	}
	// The private key serves as both the signing key and, its public half,
	// the verification key.
	return os.WriteFile(s.path("pki/sa.key"), saKey, 0o600)
}

func (s *Server) path(rel string) string { return filepath.Join(s.dir, filepath.FromSlash(rel)) }

// selfSignedServingCert returns a self-signed certificate (its own CA) for
// 127.0.0.1, ::1 and localhost, valid for a day.
func selfSignedServingCert() (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "svcproxy-test-apiserver"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), nil
}

func ecKeyPEM() ([]byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), nil
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago. The
// caller retries with another one if it is taken before use.
// freePort picks a free port on 127.0.0.1 of the server's namespace.
func (s *Server) freePort() (int, error) {
	var port int
	err := s.inNS(func() error {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		defer l.Close()
		port = l.Addr().(*net.TCPAddr).Port
		return nil
	})
	return port, err
}

// inNS runs fn in the server's namespace (or right here without one).
func (s *Server) inNS(fn func() error) error {
	if s.ns == nil {
		return fn()
	}
	return s.ns.Do(fn)
}

// dial connects from inside the server's namespace.
func (s *Server) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := s.inNS(func() error {
		var err error
		c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// nsFD is the namespace's descriptor for startProc, or -1.
func (s *Server) nsFD() int {
	if s.ns == nil {
		return -1
	}
	return s.ns.FD()
}

func (s *Server) startEtcd() error {
	var lastErr error
	for attempt := 0; attempt < portAttempts; attempt++ {
		clientPort, err := s.freePort()
		if err != nil {
			return err
		}
		peerPort, err := s.freePort()
		if err != nil {
			return err
		}
		clientURL := "http://127.0.0.1:" + strconv.Itoa(clientPort)
		peerURL := "http://127.0.0.1:" + strconv.Itoa(peerPort)
		args := []string{
			"--name=svcproxy-test",
			"--data-dir=" + s.path("etcd"),
			"--listen-client-urls=" + clientURL,
			"--advertise-client-urls=" + clientURL,
			"--listen-peer-urls=" + peerURL,
			"--initial-advertise-peer-urls=" + peerURL,
			"--initial-cluster=svcproxy-test=" + peerURL,
			"--initial-cluster-state=new",
			"--logger=zap",
			"--log-outputs=stderr",
		}
		p, err := startProc("etcd", s.etcdBin, args, filepath.Join(s.logs, "etcd.log"), childEnv(), s.nsFD())
		if err != nil {
			return err
		}
		s.mu.Lock()
		s.etcd = p
		s.mu.Unlock()
		client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: s.dial}}
		err = waitReady(p, etcdReadyTimeout, func() bool {
			resp, err := client.Get(clientURL + "/health")
			if err != nil {
				return false
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			return resp.StatusCode == http.StatusOK && bytes.Contains(body, []byte(`"health":"true"`))
		})
		if err == nil {
			s.etcdURL = clientURL
			return nil
		}
		lastErr = err
		stopErr := p.stop()
		if !p.portConflict() || stopErr != nil {
			break
		}
		_ = os.RemoveAll(s.path("etcd"))
	}
	return lastErr
}

// startAPIServer starts kube-apiserver and waits for /readyz. A fresh
// server (first start) picks a port, retrying on a port conflict; a restart
// reuses the port.
func (s *Server) startAPIServer(fresh bool) error {
	var lastErr error
	for attempt := 0; attempt < portAttempts; attempt++ {
		if fresh {
			port, err := s.freePort()
			if err != nil {
				return err
			}
			s.port = port
			s.URL = "https://127.0.0.1:" + strconv.Itoa(port)
		}
		s.mu.Lock()
		s.starts++
		n := s.starts
		s.mu.Unlock()
		p, err := startProc(fmt.Sprintf("kube-apiserver (start %d)", n), s.apiBin, s.apiserverArgs(),
			filepath.Join(s.logs, "kube-apiserver.log"), childEnv(), s.nsFD())
		if err != nil {
			return err
		}
		s.mu.Lock()
		s.apiserver = p
		s.mu.Unlock()
		client := s.httpClient()
		err = waitReady(p, apiserverReadyTimeout, func() bool {
			req, _ := http.NewRequest(http.MethodGet, s.URL+"/readyz", nil)
			req.Header.Set("Authorization", "Bearer "+s.token)
			resp, err := client.Do(req)
			if err != nil {
				return false
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			return resp.StatusCode == http.StatusOK
		})
		client.CloseIdleConnections()
		if err == nil {
			if fresh {
				return s.writeKubeconfig()
			}
			return nil
		}
		lastErr = err
		stopErr := p.stop()
		if !fresh || !p.portConflict() || stopErr != nil {
			break
		}
	}
	return lastErr
}

// apiserverArgs are the kube-apiserver flags. Admission: ServiceAccount is
// disabled because without kube-controller-manager no "default" service
// account exists and it would reject every Pod; all other default plugins
// stay on.
func (s *Server) apiserverArgs() []string {
	return append([]string{
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(s.port),
		"--etcd-servers=" + s.etcdURL,
		"--service-cluster-ip-range=" + ServiceClusterIPRange,
		"--endpoint-reconciler-type=none",
		"--authorization-mode=RBAC",
		"--token-auth-file=" + s.path("pki/tokens.csv"),
		"--tls-cert-file=" + s.path("pki/serving.crt"),
		"--tls-private-key-file=" + s.path("pki/serving.key"),
		"--cert-dir=" + s.path("pki"),
		"--service-account-issuer=" + ServiceAccountIssuer,
		"--service-account-key-file=" + s.path("pki/sa.key"),
		"--service-account-signing-key-file=" + s.path("pki/sa.key"),
		"--api-audiences=" + ServiceAccountIssuer,
		"--disable-admission-plugins=ServiceAccount",
		"--profiling=false",
	}, s.extraArgs...)
}

// httpClient trusts the server's certificate and nothing else.
func (s *Server) httpClient() *http.Client {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(s.caPEM)
	return &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, DialContext: s.dial},
	}
}

func (s *Server) writeKubeconfig() error {
	s.kubeconfig = s.path("kubeconfig")
	return s.writeKubeconfigFor(s.kubeconfig, s.URL)
}

// writeKubeconfigFor writes a kubeconfig with the server's credentials for
// the API server at url (the server itself, or a Proxy in front of it).
func (s *Server) writeKubeconfigFor(path, url string) error {
	ca := base64.StdEncoding.EncodeToString(s.caPEM)
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: svcproxy-test
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: svcproxy-test-admin
  user:
    token: %s
contexts:
- name: svcproxy-test
  context:
    cluster: svcproxy-test
    user: svcproxy-test-admin
current-context: svcproxy-test
`, url, ca, s.token)
	return os.WriteFile(path, []byte(cfg), 0o600)
}

// RESTConfig returns a new client config for the server: bearer token of a
// system:masters user, TLS verified against the server's self-signed
// certificate, and client-side rate limits raised (QPS 1000, burst 2000) so
// tests are not throttled.
func (s *Server) RESTConfig() *rest.Config {
	return &rest.Config{
		Host:            s.URL,
		BearerToken:     s.token,
		TLSClientConfig: rest.TLSClientConfig{CAData: append([]byte(nil), s.caPEM...)},
		QPS:             1000,
		Burst:           2000,
		Timeout:         30 * time.Second,
		Dial:            s.dial,
	}
}

// Kubeconfig returns the path of a kubeconfig file with the same
// credentials as RESTConfig, for a daemon's --kubeconfig. It lives in the
// test's temporary directory and is removed with it.
func (s *Server) Kubeconfig() string { return s.kubeconfig }

// Client returns a new clientset for RESTConfig. It keeps working across
// Stop/Restart (requests fail while the server is stopped).
func (s *Server) Client() kubernetes.Interface {
	c, err := kubernetes.NewForConfig(s.RESTConfig())
	if err != nil {
		s.t.Fatalf("apiserver: clientset: %v", err)
	}
	return c
}

// Stop stops the API server only (SIGTERM, SIGKILL after 15s), keeping etcd
// and its data, e.g. to test an API server outage. Clients then fail to
// connect until Restart. Stopping a stopped server does nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	p := s.apiserver
	s.mu.Unlock()
	if p == nil {
		return
	}
	if err := p.stop(); err != nil {
		s.t.Errorf("apiserver: %v", err)
	}
}

// Restart starts the API server again on the same port, with the same
// certificates, credentials and etcd data, and waits for /readyz; it stops
// the running one first if Stop was not called. Failure fails t.
func (s *Server) Restart(t TB) {
	t.Helper()
	s.Stop()
	if err := s.startAPIServer(false); err != nil {
		t.Fatalf("apiserver: restart: %v", err)
	}
}

// PIDs returns the process IDs of etcd and of the current kube-apiserver
// (0 when not started), e.g. to check that they are gone after cleanup.
func (s *Server) PIDs() (etcd, apiserver int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.etcd != nil {
		etcd = s.etcd.cmd.Process.Pid
	}
	if s.apiserver != nil {
		apiserver = s.apiserver.cmd.Process.Pid
	}
	return etcd, apiserver
}

// LogDir returns the directory holding etcd.log and kube-apiserver.log
// (each process's stdout and stderr; restarts append).
func (s *Server) LogDir() string { return s.logs }

func (s *Server) cleanup() {
	s.mu.Lock()
	etcd, api := s.etcd, s.apiserver
	s.mu.Unlock()
	if s.t.Failed() {
		for _, name := range []string{"kube-apiserver.log", "etcd.log"} {
			if tail := tailFile(filepath.Join(s.logs, name), 30); tail != "" {
				s.t.Logf("apiserver: last lines of %s:\n%s", name, tail)
			}
		}
	}
	// API server first: it would otherwise log etcd errors while stopping.
	for _, p := range []*proc{api, etcd} {
		if p == nil {
			continue
		}
		if err := p.stop(); err != nil {
			s.t.Errorf("apiserver: %v", err)
		}
	}
}

// childEnv is the test's environment minus ETCD_* variables, which etcd
// would read as flags (and refuse when they conflict with ours).
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ETCD_") {
			env = append(env, kv)
		}
	}
	return env
}

// waitReady polls ready every 100ms until it returns true, the process
// exits, or the timeout passes.
func waitReady(p *proc, timeout time.Duration, ready func() bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if ready() {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("%s (pid %d) exited before it was ready: %v\n%s",
				p.name, p.cmd.Process.Pid, p.waitErr, p.tail())
		case <-ctx.Done():
			return fmt.Errorf("%s (pid %d) not ready after %v\n%s",
				p.name, p.cmd.Process.Pid, timeout, p.tail())
		case <-tick.C:
		}
	}
}

func tailFile(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	const max = 64 << 10
	if st, err := f.Stat(); err == nil && st.Size() > max {
		_, _ = f.Seek(-max, io.SeekEnd)
	}
	b, _ := io.ReadAll(f)
	return lastLines(b, n)
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// proc is one child process, in its own process group, with stdout and
// stderr appended to a log file.
type proc struct {
	name      string
	cmd       *exec.Cmd
	log       string
	logOffset int64         // size of log before this process wrote to it
	done      chan struct{} // closed when the process has exited and was reaped
	waitErr   error         // set before done is closed
}

// startProc starts bin. The process gets its own process group (so signals
// for the test's group don't reach it) and, on Linux, SIGKILL when the test
// process dies (so a test binary killed by a timeout leaves nothing behind).
func startProc(name, bin string, args []string, logPath string, env []string, netnsFD int) (*proc, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	offset, _ := logf.Seek(0, io.SeekEnd)
	fmt.Fprintf(logf, "==== %s: %s %s\n", time.Now().Format(time.RFC3339Nano), bin, strings.Join(args, " "))
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = env
	cmd.SysProcAttr = sysProcAttr()
	p := &proc{name: name, cmd: cmd, log: logPath, logOffset: offset, done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		// The parent-death signal fires when the *thread* that forked the
		// child exits, and the Go runtime may retire threads. Lock this
		// goroutine to its thread and keep it there until the child has
		// exited; returning while locked then retires the thread.
		runtime.LockOSThread()
		// A child inherits the forking thread's network namespace.
		if netnsFD >= 0 {
			if err := unix.Setns(netnsFD, unix.CLONE_NEWNET); err != nil {
				logf.Close()
				started <- fmt.Errorf("setns: %w", err)
				return
			}
		}
		err := cmd.Start()
		logf.Close() // the child has its own descriptor
		started <- err
		if err != nil {
			return
		}
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	return p, nil
}

// stop sends SIGTERM to the process (by PID), waits up to stopGracePeriod,
// then sends SIGKILL and waits for it to be reaped. It returns an error
// only if the process could not be made to exit.
func (p *proc) stop() error {
	select {
	case <-p.done:
		return nil
	default:
	}
	// os.Process signals through a pidfd: never a recycled PID.
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(stopGracePeriod):
	}
	_ = p.cmd.Process.Kill()
	select {
	case <-p.done:
		return nil
	case <-time.After(killWait):
		return fmt.Errorf("%s (pid %d) did not exit after SIGTERM and SIGKILL", p.name, p.cmd.Process.Pid)
	}
}

func (p *proc) tail() string {
	return "last lines of " + p.log + ":\n" + tailFile(p.log, 30)
}

// portConflict reports whether the process failed because its port was
// taken between freePort and its bind.
func (p *proc) portConflict() bool {
	b, err := os.ReadFile(p.log)
	if err != nil || int64(len(b)) < p.logOffset {
		return false
	}
	return bytes.Contains(b[p.logOffset:], []byte("address already in use"))
}
