package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"
)

// The attacks of a hostile experimenter (issue 13), run by the agent tests
// inside a real container to show that each is refused or contained. Each
// prints what it achieved on stdout, one line per step, so the test can
// report the figure.
var hostile = flag.String("hostile", "", "attack: swap TARGET | forkbomb | mem MiB | privileged | sparse GiB | fill")

func runHostile(mode string, args []string) {
	arg := func() string {
		if len(args) == 0 {
			fmt.Fprintln(os.Stderr, "missing argument")
			os.Exit(2)
		}
		return args[0]
	}
	switch mode {
	case "swap":
		swap(arg())
	case "forkbomb":
		n := 0
		for ; n < 100000; n++ {
			if err := exec.Command("/prog", "-sleep", "forever").Start(); err != nil {
				fmt.Printf("fork refused after %d processes: %v\n", n, err)
				break
			}
		}
		fmt.Printf("processes started: %d\n", n)
	case "mem":
		mib, _ := strconv.Atoi(arg())
		var keep [][]byte
		for i := 1; i <= mib; i++ {
			b := make([]byte, 1<<20)
			for j := 0; j < len(b); j += 4096 {
				b[j] = 1
			}
			keep = append(keep, b)
			if i%16 == 0 {
				fmt.Printf("touched %d MiB\n", i)
			}
		}
		fmt.Printf("touched all %d MiB\n", len(keep))
	case "privileged":
		try := func(what string, err error) {
			if err != nil {
				fmt.Printf("%s: refused (%v)\n", what, err)
			} else {
				fmt.Printf("%s: ALLOWED\n", what)
			}
		}
		try("mknod /data/mem", syscall.Mknod("/data/mem", syscall.S_IFCHR|0o600, 1<<8|1))
		fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_RAW, syscall.IPPROTO_ICMP)
		if err == nil {
			syscall.Close(fd)
		}
		try("raw socket", err)
		try("chown /data", os.Chown("/data", 12345, 12345))
		try("write /prog", os.WriteFile("/prog.x", []byte("x"), 0o755))
	case "sparse":
		gib, _ := strconv.ParseInt(arg(), 10, 64)
		f, err := os.Create("/data/sparse.bin")
		if err == nil {
			_, _ = f.WriteString("head")
			_, _ = f.WriteAt([]byte("tail"), gib<<30-4)
			err = f.Close()
		}
		fmt.Printf("sparse file of %d GiB: %v\n", gib, err)
	case "fill":
		f, err := os.Create("/data/fill.bin")
		var n int64
		buf := make([]byte, 1<<20)
		for i := range buf {
			buf[i] = byte(i) | 1
		}
		for err == nil {
			var k int
			k, err = f.Write(buf)
			n += int64(k)
		}
		fmt.Printf("wrote %d bytes before: %v\n", n, err)
	default:
		fmt.Fprintln(os.Stderr, "unknown attack", mode)
		os.Exit(2)
	}
	if *sleepFlag == "forever" {
		for {
			time.Sleep(time.Hour)
		}
	}
}

// swap keeps replacing /data/d, a directory holding the file "key.pem",
// with a symbolic link to target (a host directory holding a key.pem of its
// own), so that an agent that resolves /data/d/key.pem by path at the wrong
// moment reads the host's file.
func swap(target string) {
	must := func(err error) {
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(3)
		}
	}
	must(os.MkdirAll("/data/d", 0o755))
	must(os.WriteFile("/data/d/key.pem", []byte("inside the sliver\n"), 0o644))
	_ = os.Remove("/data/link")
	must(os.Symlink(target, "/data/link"))
	fmt.Println("swapping")
	for i := 0; ; i++ {
		// d is the directory, link the symbolic link; swap them (two
		// atomic renames through a spare name), again and again.
		must(os.Rename("/data/d", "/data/spare"))
		must(os.Rename("/data/link", "/data/d"))
		must(os.Rename("/data/d", "/data/link"))
		must(os.Rename("/data/spare", "/data/d"))
	}
}
