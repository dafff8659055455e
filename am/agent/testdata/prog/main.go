// Command prog is the program inside the agent tests' container image (built
// FROM scratch as a static binary). What it does is chosen by flags, in this
// order: -append, -write, -cat, -try-write, -out, -err, -sleep, then exit with -exit.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

var sleepFlag = flag.String("sleep", "", `how long to run: a duration, or "forever" (until signalled)`)

type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(s string) error { *l = append(*l, s); return nil }

func main() {
	var writes, cats, appends, tries list
	out := flag.String("out", "", "line to print on stdout")
	errs := flag.String("err", "", "line to print on stderr")
	sleep := sleepFlag
	code := flag.Int("exit", 0, "exit code")
	flag.Var(&writes, "write", "name=content: write /data/name")
	flag.Var(&cats, "cat", "path: copy the file to stdout")
	flag.Var(&appends, "append", "name: append a line to /data/name (counts runs)")
	flag.Var(&tries, "try-write", "path: try to create the file; print the outcome on stdout")
	flag.Parse()
	if *hostile != "" {
		runHostile(*hostile, flag.Args())
	}

	for _, a := range appends {
		f, err := os.OpenFile("/data/"+a, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(100)
		}
		fmt.Fprintln(f, "run")
		f.Close()
	}
	for _, w := range writes {
		name, content, _ := strings.Cut(w, "=")
		if err := os.WriteFile("/data/"+name, []byte(content), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(101)
		}
	}
	for _, c := range cats {
		b, err := os.ReadFile(c)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(102)
		}
		os.Stdout.Write(b)
	}
	for _, p := range tries {
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			fmt.Println("write " + p + ": refused")
		} else {
			fmt.Println("write " + p + ": ok")
		}
	}
	if *out != "" {
		fmt.Println(*out)
	}
	if *errs != "" {
		fmt.Fprintln(os.Stderr, *errs)
	}
	// As PID 1 the program gets no default signal handling: exit on TERM.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	switch *sleep {
	case "":
	case "forever":
		<-sig
		fmt.Println("terminated")
		os.Exit(0)
	default:
		d, err := time.ParseDuration(*sleep)
		if err != nil {
			os.Exit(103)
		}
		select {
		case <-time.After(d):
		case <-sig:
			os.Exit(0)
		}
	}
	os.Exit(*code)
}
