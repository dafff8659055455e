// Command geni-am is the aggregate manager and its operator tools.
//
//	geni-am serve [--config FILE] [--key=value ...]   run the aggregate
//	geni-am dev [--var DIR]                           make run: embedded PostgreSQL, dev PKI, demo inventory, serve
//	geni-am migrate [--config FILE]                   apply database migrations and exit
//	geni-am admin [--json] COMMAND ...                operator commands on the database (docs/operator.md)
//	geni-am config-reference                          print docs/configuration.md
package main

import (
	"fmt"
	"os"
	"runtime/debug"

	"github.com/geniam/geniam/am/config"
)

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	if os.Getenv("GOGC") == "" {
		// The aggregate's live heap is small (the node list, pools, caches:
		// tens of MB) and a call's garbage dies with the call, so the
		// default pacing (GOGC=100) spent a tenth of the CPU of an
		// Allocate+Delete run marking the same live heap over and over. At
		// 400 the heap may grow to five times the live data between
		// collections. GOGC and GOMEMLIMIT in the environment still rule.
		debug.SetGCPercent(400)
	}
	var err error
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "config-reference":
		fmt.Print(config.Reference())
	case "help", "-h", "--help":
		usage()
	default:
		if run, ok := commands[cmd]; ok {
			err = run(args)
		} else {
			fmt.Fprintf(os.Stderr, "geni-am: unknown command %q\n", cmd)
			usage()
			os.Exit(2)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "geni-am:", err)
		os.Exit(1)
	}
}

// commands are registered by the files of this package that implement them.
var commands = map[string]func(args []string) error{}

func usage() {
	fmt.Fprint(os.Stderr, `usage: geni-am COMMAND [flags]

commands:
  serve              run the aggregate (XML-RPC/TLS AM API v3)
  dev                what make run does: a private PostgreSQL, dev PKI and demo inventory under ./var, then serve
  migrate            apply database migrations and exit
  admin              operator commands: nodes, slices, slivers, jobs, audit, maintenance (geni-am admin help)
  config-reference   print the configuration reference (docs/configuration.md)
`)
}
