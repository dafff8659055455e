// Command geni is a GENI client: omni's AM API v3 and clearinghouse verbs
// with omni's names, arguments, omni_config and -o files, plus what omni
// lacks (wait, ssh, data, logs). The work is done by am/geniclient; this
// file parses the command line and maps outcomes to exit codes.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/geniam/geniam/am/geniclient"
	"github.com/spf13/pflag"
)

// Exit codes, for scripts (docs/experimenter.md lists them).
const (
	exitOK          = 0
	exitRefused     = 1 // the aggregate or clearinghouse answered with an error (geni_code, fault, HTTP error)
	exitUsage       = 2 // bad command line or omni_config
	exitNoAnswer    = 3 // no answer: connection, TLS, not XML-RPC
	exitFailed      = 4 // wait: a sliver is geni_failed
	exitTimeout     = 5 // wait: not ready in time
	exitUnsupported = 6 // the aggregate does not offer this (no login, no data link in the manifest)
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// options are the command-line options, named as omni names them.
type options struct {
	config, framework, prefix, outputFile string
	aggregates, sliverURNs, creds         []string
	apiVersion                            int
	output, bestEffort, alap, available   bool
	userCredFile, sliceCredFile           string
	speaksFor, endTime, caFile            string
	startTime                             string
	json                                  bool
	timeout, interval, waitTimeout        time.Duration
	dashArgs                              []string // after "--" (ssh's remote command)
}

// verb is one command: its arguments and what it does. verbs is the one
// list of them: dispatch, argument counts and the usage text come from it.
type verb struct {
	args     string // usage of the arguments
	min, max int
	help     string
	run      func(s *session, args []string) error
	am       bool // an AM API call: runs once per aggregate
}

var verbs = map[string]verb{
	// The AM API v3 verbs, with omni's names and arguments (am_verbs.go). Each
	// runs once per aggregate (-a, or those the clearinghouse lists).
	"getversion":               {"", 0, 0, "the aggregate's version and capabilities", getVersion, true},
	"listresources":            {"", 0, 1, "the advertisement (-o: rspec-<server>.xml)", listResources, true},
	"describe":                 {"SLICE", 1, 1, "the manifest of a slice", describe, true},
	"allocate":                 {"SLICE RSPEC", 2, 2, "reserve what a request RSpec asks for", allocate, true},
	"provision":                {"SLICE", 1, 1, "provision allocated slivers, installing omni_config users' SSH keys", provision, true},
	"status":                   {"SLICE", 1, 1, "the state of a slice's slivers", status, true},
	"renew":                    {"SLICE TIME", 2, 2, "extend slivers to TIME", renew, true},
	"performoperationalaction": {"SLICE ACTION", 2, 2, "geni_start, geni_restart, geni_stop, ... (alias poa)", poa, true},
	"delete":                   {"SLICE", 1, 1, "delete a slice's slivers at the aggregate", deleteSlivers, true},
	"shutdown":                 {"SLICE", 1, 1, "emergency stop of a slice at the aggregate", shutdown, true},

	// The clearinghouse verbs of a walkthrough, as omni's gcf framework does
	// them (ch_verbs.go).
	"getusercred":    {"", 0, 0, "your user credential (-o: <user>-<framework>-usercred.json)", getUserCred, false},
	"createslice":    {"SLICE", 1, 1, "create a slice at the clearinghouse", createSlice, false},
	"getslicecred":   {"SLICE", 1, 1, "a slice's credential (-o: <slice>-cred.json)", getSliceCred, false},
	"renewslice":     {"SLICE TIME", 2, 2, "extend a slice at the clearinghouse", renewSlice, false},
	"listaggregates": {"", 0, 0, "the aggregates the clearinghouse knows (what AM calls use without -a)", listAggregates, false},

	// What omni lacks (extra_verbs.go).
	"wait": {"SLICE", 1, 1, "poll Status until every sliver is ready (exit 0), one failed (4) or --wait-timeout (5)", waitReady, true},
	"ssh":  {"SLICE [CLIENT_ID] [-- COMMAND]", 1, 2, "log in with ssh as the manifest's <login> says", sshLogin, true},
	"data": {"SLICE [CLIENT_ID]", 1, 2, "download /data of the slice's nodes (<slice>-<client_id>-data.tar)", downloadData, true},
	"logs": {"SLICE [CLIENT_ID]", 1, 2, "the output of the nodes' start commands", downloadLogs, true},
}

func flags(o *options) *pflag.FlagSet {
	fs := pflag.NewFlagSet("geni", pflag.ContinueOnError)
	fs.SortFlags = false
	fs.StringVarP(&o.config, "configfile", "c", "", "omni_config file (default: ./omni_config, then ~/.gcf/omni_config)")
	fs.StringVarP(&o.framework, "framework", "f", os.Getenv("GENI_FRAMEWORK"), "clearinghouse section of omni_config (default: [omni] default_cf)")
	fs.StringArrayVarP(&o.aggregates, "aggregate", "a", nil, "aggregate nickname, URL or URN (repeatable; default: those the clearinghouse lists)")
	fs.IntVarP(&o.apiVersion, "api-version", "V", 3, "AM API version (geni speaks 3)")
	fs.BoolVarP(&o.output, "output", "o", false, "save results to files named as omni names them")
	fs.StringVarP(&o.prefix, "prefix", "p", "", "prefix of -o file names")
	fs.StringVar(&o.outputFile, "outputfile", "", "name of the -o file (%a: aggregate, %s: slice)")
	fs.StringVar(&o.userCredFile, "usercredfile", os.Getenv("GENI_USERCRED"), "user credential file: read it if it exists, save to it with -o")
	fs.StringVar(&o.sliceCredFile, "slicecredfile", os.Getenv("GENI_SLICECRED"), "slice credential file: read it if it exists, save to it with -o")
	fs.StringVar(&o.speaksFor, "speaksfor", "", "URN of the user this tool speaks for (geni_speaking_for; give the speaks-for credential with --cred)")
	fs.StringArrayVar(&o.creds, "cred", nil, "extra credential file sent with every AM call (repeatable)")
	fs.StringArrayVarP(&o.sliverURNs, "sliver-urn", "u", nil, "act on this sliver only, not the whole slice (repeatable)")
	fs.BoolVar(&o.bestEffort, "best-effort", false, "geni_best_effort: act on the slivers that can be, not all or none")
	fs.StringVar(&o.endTime, "end-time", "", "geni_end_time for allocate and provision")
	fs.StringVar(&o.startTime, "start-time", "", "allocate: geni_start_time, book whole nodes from then until --end-time (an advance reservation)")
	fs.BoolVar(&o.alap, "alap", false, "renew: as long as possible if not until the time asked (geni_extend_alap)")
	fs.BoolVar(&o.available, "available", false, "listresources: only what is available now (geni_available)")
	fs.BoolVar(&o.json, "json", false, "print JSON (one object per aggregate and line) instead of tables")
	fs.StringVar(&o.caFile, "ca", "", "check the servers' certificates against these roots (omni checks none)")
	fs.DurationVar(&o.timeout, "timeout", 6*time.Minute, "time limit of one call (omni's --ssltimeout)")
	fs.DurationVar(&o.interval, "interval", 5*time.Second, "wait: time between Status calls")
	fs.DurationVar(&o.waitTimeout, "wait-timeout", 15*time.Minute, "wait: give up after this long")
	// omni options that only steer omni's caches; geni has none. Accepted
	// so that omni command lines work unchanged.
	for _, name := range []string{"ForceUseAggNickCache", "NoAggNickCache", "NoGetVersionCache", "ForceUseGetVersionCache", "noCacheFiles", "useSliceAggregates", "debug"} {
		fs.Bool(name, false, "accepted for omni compatibility; no effect")
		_ = fs.MarkHidden(name)
	}
	return fs
}

func usage(w io.Writer, fs *pflag.FlagSet) {
	fmt.Fprint(w, "usage: geni [options] COMMAND [ARGS]\n\nCommands (omni's, plus wait, ssh, data and logs):\n")
	names := slices.Sorted(maps.Keys(verbs))
	for _, n := range names {
		v := verbs[n]
		fmt.Fprintf(w, "  %-26s %s\n", n+" "+v.args, v.help)
	}
	fmt.Fprint(w, "\nOptions:\n")
	fs.SetOutput(w)
	fs.PrintDefaults()
	fmt.Fprint(w, "\nExit codes: 0 ok, 1 refused by the aggregate or clearinghouse, 2 usage or configuration,\n"+
		"3 no answer, 4 a sliver failed (wait), 5 timed out (wait), 6 not offered by the aggregate.\n")
}

func run(ctx context.Context, argv []string, stdout, stderr io.Writer) int {
	var o options
	fs := flags(&o)
	fs.SetOutput(io.Discard)
	if err := fs.Parse(argv); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			usage(stdout, fs)
			return exitOK
		}
		fmt.Fprintf(stderr, "geni: %v (geni --help lists the options)\n", err)
		return exitUsage
	}
	args := fs.Args()
	if n := fs.ArgsLenAtDash(); n >= 0 {
		args, o.dashArgs = args[:n], args[n:]
	}
	if len(args) == 0 {
		usage(stderr, fs)
		return exitUsage
	}
	name := strings.ToLower(args[0])
	if name == "poa" {
		name = "performoperationalaction"
	}
	v, ok := verbs[name]
	if !ok {
		fmt.Fprintf(stderr, "geni: unknown command %q (geni --help lists them)\n", args[0])
		return exitUsage
	}
	args = args[1:]
	if len(args) < v.min || (v.max >= 0 && len(args) > v.max) {
		fmt.Fprintf(stderr, "geni: usage: geni [options] %s %s\n", name, v.args)
		return exitUsage
	}
	if o.apiVersion != 3 {
		fmt.Fprintf(stderr, "geni: AM API version %d is not spoken here: geni speaks AM API v3 (-V3)\n", o.apiVersion)
		return exitUsage
	}
	if len(o.dashArgs) > 0 && name != "ssh" {
		fmt.Fprintf(stderr, "geni: only ssh takes a command after --\n")
		return exitUsage
	}
	s, err := newSession(ctx, &o, stdout, stderr)
	if err != nil {
		return report(stderr, stdout, &o, name, "", err)
	}
	defer s.close()
	if !v.am {
		return report(stderr, stdout, &o, name, "", v.run(s, args))
	}
	aggs, err := s.aggregates()
	if err != nil {
		return report(stderr, stdout, &o, name, "", err)
	}
	worst := exitOK
	for _, a := range aggs {
		s.agg = a
		if code := report(stderr, stdout, &o, name, a.Name(), v.run(s, args)); code > worst {
			worst = code
		}
	}
	return worst
}

// usageError is a bad command line or configuration.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

// unsupportedError is something the aggregate does not offer.
type unsupportedError struct{ msg string }

func (e *unsupportedError) Error() string { return e.msg }

// waitError ends geni wait without success.
type waitError struct {
	code int
	msg  string
}

func (e *waitError) Error() string { return e.msg }

// report prints err for a person (stderr) or a script (--json, stdout) and
// returns the exit code.
func report(stderr, stdout io.Writer, o *options, verbName, agg string, err error) int {
	if err == nil {
		return exitOK
	}
	code, label, geniCode, logID := exitRefused, "", 0, ""
	var (
		ue *usageError
		te *geniclient.TransportError
		ge *geniclient.GENIError
		fe *geniclient.FaultError
		de *geniclient.DownloadError
		un *unsupportedError
		we *waitError
	)
	switch {
	case errors.As(err, &ue):
		code = exitUsage
	case errors.As(err, &ge):
		label, geniCode, logID = ge.Label(), ge.Code, ge.LogID()
	case errors.As(err, &fe):
		label, geniCode = geniclient.CodeLabel(fe.Code), fe.Code
	case errors.As(err, &de):
		if de.Code >= 0 {
			label, geniCode = geniclient.CodeLabel(de.Code), de.Code
		}
		logID = de.LogID()
	case errors.As(err, &te):
		code = exitNoAnswer
	case errors.As(err, &un):
		code = exitUnsupported
	case errors.As(err, &we):
		code = we.code
	case errors.Is(err, context.Canceled):
		code = exitNoAnswer
	case errors.Is(err, os.ErrNotExist):
		code = exitUsage
	}
	where := verbName
	if agg != "" {
		where += " at " + agg
	}
	if o.json {
		line := map[string]any{"command": verbName, "error": err.Error(), "exit_code": code}
		if agg != "" {
			line["aggregate"] = agg
		}
		if label != "" {
			line["geni_code"], line["geni_code_label"] = geniCode, label
		}
		if logID != "" {
			line["log_id"] = logID
		}
		printJSONLine(stdout, line)
	}
	fmt.Fprintf(stderr, "geni: %s failed: %v\n", where, err)
	if logID != "" {
		fmt.Fprintf(stderr, "geni: log id %s: quote it to the aggregate's operators\n", logID)
	}
	return code
}
