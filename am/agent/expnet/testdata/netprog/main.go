// Command netprog is the program in the link tests' container image (FROM
// scratch, static): with -serve it answers UDP echo on :7000 and counts TCP
// bytes on :7001; the other modes measure from inside a container (run with
// docker exec) and print one line of results.
package main

import (
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"time"
)

func main() {
	serve := flag.Bool("serve", false, "answer UDP echo on :7000 and TCP throughput on :7001, forever")
	ping := flag.String("ping", "", "host: UDP round trips; prints min/median/max ms and losses")
	count := flag.Int("n", 10, "round trips of -ping")
	reach := flag.String("reach", "", "host: one UDP round trip within -timeout; prints ok or unreachable")
	expect := flag.String("expect", "", "with -reach: the answer must come from the container with this hostname")
	tput := flag.String("tput", "", "host: send TCP for -secs; prints the rate the receiver counted, Mbit/s")
	secs := flag.Float64("secs", 3, "seconds of -tput")
	timeout := flag.Duration("timeout", time.Second, "wait per round trip")
	flag.Parse()
	switch {
	case *serve:
		go tcpSink()
		udpEcho()
	case *reach != "":
		_, from, err := roundTrip(*reach, *timeout)
		if err != nil {
			fmt.Println("unreachable", err)
			return
		}
		if *expect != "" && from != *expect {
			fmt.Println("answered by", from)
			return
		}
		fmt.Println("ok")
	case *ping != "":
		var rtts []float64
		lost := 0
		for i := 0; i < *count; i++ {
			d, _, err := roundTrip(*ping, *timeout)
			if err != nil {
				lost++
				continue
			}
			rtts = append(rtts, float64(d.Microseconds())/1000)
			time.Sleep(20 * time.Millisecond)
		}
		if len(rtts) == 0 {
			fmt.Println("unreachable")
			os.Exit(1)
		}
		sort.Float64s(rtts)
		fmt.Printf("rtt_ms %.3f %.3f %.3f lost %d\n", rtts[0], rtts[len(rtts)/2], rtts[len(rtts)-1], lost)
	case *tput != "":
		mbps, err := send(*tput, time.Duration(*secs*float64(time.Second)))
		if err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		fmt.Printf("mbps %.3f\n", mbps)
	default:
		flag.Usage()
		os.Exit(2)
	}
}

func udpEcho() {
	c, err := net.ListenPacket("udp", ":7000")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	host, _ := os.Hostname()
	buf := make([]byte, 2048)
	for {
		n, a, err := c.ReadFrom(buf)
		if err != nil || n > 1024 {
			continue
		}
		c.WriteTo(append(buf[:n], host...), a) // the echo, then who answered
	}
}

// roundTrip sends one datagram to host's echo and returns the round-trip
// time and the hostname of the container that answered.
func roundTrip(host string, timeout time.Duration) (time.Duration, string, error) {
	c, err := net.Dial("udp", net.JoinHostPort(host, "7000"))
	if err != nil {
		return 0, "", err
	}
	defer c.Close()
	msg := make([]byte, 64)
	binary.BigEndian.PutUint64(msg, uint64(time.Now().UnixNano()))
	start := time.Now()
	c.SetDeadline(start.Add(timeout))
	if _, err := c.Write(msg); err != nil {
		return 0, "", err
	}
	buf := make([]byte, 512)
	for {
		n, err := c.Read(buf)
		if err != nil {
			return 0, "", err
		}
		if n >= len(msg) && string(buf[:8]) == string(msg[:8]) {
			return time.Since(start), string(buf[len(msg):n]), nil
		}
	}
}

// warmup is left out of a throughput measurement: TCP's slow start, which
// on a link with 100 ms round trips takes about half a second.
const warmup = time.Second

// tcpSink counts what a sender sends, from warmup after its first byte to
// its EOF, and answers those bytes (8) and nanoseconds (8).
func tcpSink() {
	l, err := net.Listen("tcp", ":7001")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	for {
		c, err := l.Accept()
		if err != nil {
			continue
		}
		go func() {
			defer c.Close()
			buf := make([]byte, 64<<10)
			var n, n1 int64
			var first, t1 time.Time
			for {
				k, err := c.Read(buf)
				now := time.Now()
				if k > 0 && first.IsZero() {
					first = now
				}
				if t1.IsZero() && !first.IsZero() && now.Sub(first) >= warmup {
					t1, n1 = now, n // steady state from here
				}
				n += int64(k)
				if err != nil {
					break
				}
			}
			if t1.IsZero() { // shorter than the warm-up: all of it
				t1 = first
			}
			out := make([]byte, 16)
			binary.BigEndian.PutUint64(out, uint64(n-n1))
			binary.BigEndian.PutUint64(out[8:], uint64(time.Since(t1)))
			c.Write(out)
		}()
	}
}

func send(host string, d time.Duration) (float64, error) {
	c, err := net.DialTimeout("tcp", net.JoinHostPort(host, "7001"), 3*time.Second)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	buf := make([]byte, 32<<10)
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		c.SetWriteDeadline(end.Add(5 * time.Second))
		if _, err := c.Write(buf); err != nil {
			return 0, err
		}
	}
	c.(*net.TCPConn).CloseWrite()
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	out := make([]byte, 16)
	if _, err := io.ReadFull(c, out); err != nil {
		return 0, err
	}
	n, ns := binary.BigEndian.Uint64(out), binary.BigEndian.Uint64(out[8:])
	if ns == 0 {
		return 0, fmt.Errorf("no time measured")
	}
	return float64(n) * 8 / (float64(ns) / 1e9) / 1e6, nil
}
