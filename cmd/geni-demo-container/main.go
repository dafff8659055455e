// Command geni-demo-container is the program of the demo image that make run
// builds (FROM scratch: this static binary alone). It shows what a sliver's
// container sees: it prints its identity, writes a greeting and then a
// heartbeat into /data (which the experimenter downloads through the
// aggregate), and keeps running until stopped. With -once it exits after the
// greeting, with -exit's code: a run-once job whose exit code shows in Status.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"
)

func main() {
	dataDir := flag.String("data", "/data", "directory to write into")
	once := flag.Bool("once", false, "exit after writing the greeting")
	exitCode := flag.Int("exit", 0, "exit code with -once")
	every := flag.Duration("every", 5*time.Second, "heartbeat period")
	flag.Parse()

	sliver := os.Getenv("GENI_SLIVER_URN")
	slice := os.Getenv("GENI_SLICE_URN")
	fmt.Printf("geni-demo-container: sliver %s of slice %s\n", sliver, slice)
	if b, err := os.ReadFile("/geni/authorized_keys"); err == nil {
		fmt.Printf("geni-demo-container: %d bytes of authorized_keys\n", len(b))
	}
	greeting := fmt.Sprintf("hello from %s at %s\n", sliver, time.Now().UTC().Format(time.RFC3339))
	if err := os.WriteFile(filepath.Join(*dataDir, "hello.txt"), []byte(greeting), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "geni-demo-container:", err)
		os.Exit(2)
	}
	if *once {
		fmt.Println("geni-demo-container: done")
		os.Exit(*exitCode)
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	t := time.NewTicker(*every)
	defer t.Stop()
	for n := 1; ; n++ {
		select {
		case <-stop:
			fmt.Println("geni-demo-container: stopping")
			return
		case now := <-t.C:
			line := fmt.Sprintf("%d %s\n", n, now.UTC().Format(time.RFC3339))
			_ = os.WriteFile(filepath.Join(*dataDir, "heartbeat"), []byte(line), 0o644)
		}
	}
}
