// Command svcproxy is a Kubernetes service proxy: a kube-proxy-compatible
// daemon (run) and a command line that shows what it would program for a set
// of manifests.
package main

import (
	"fmt"
	"io"
	"os"
)

type command struct {
	name, summary string
	run           func(args []string, stdout, stderr io.Writer) int
}

var commands = []command{
	{"run", "the daemon: program this node's rules from an API server or --manifests DIR", runRun},
	{"cleanup", "remove everything svcproxy programmed (nftables and iptables) and nothing else", runCleanup},
	{"render", "print the rules for manifests, as the kernel lists them (no kernel, no root)", runRender},
	{"diff", "unified diff of the rules of two sets of manifests; exit 0 equal, 1 different, 2 error", runDiff},
	{"explain", "what the rules do with one packet: Service, endpoints and weights, masquerade, reject/drop", runExplain},
	{"state", "print the model's desired state for manifests (no kernel, no root)", runState},
}

func main() {
	os.Exit(dispatch(os.Args[1:], os.Stdout, os.Stderr))
}

func dispatch(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stderr)
		return 2
	}
	for _, c := range commands {
		if c.name == args[0] {
			return c.run(args[1:], stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "svcproxy: unknown command %q\n", args[0])
	usage(stderr)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: svcproxy COMMAND [flags]\n\ncommands:")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
	}
}
