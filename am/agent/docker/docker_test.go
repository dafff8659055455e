package docker

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"os"
	"strings"
	"testing"
	"time"
)

func TestNegotiate(t *testing.T) {
	cases := []struct {
		server, want string
		ok           bool
	}{
		{"1.41", "1.41", true}, // Docker 20.10 (Debian bookworm)
		{"1.40", "1.40", true},
		{"1.39", "", false},
		{"1.52", MaxAPIVersion, true}, // Docker 29 refuses clients below 1.44
		{"1.45", "1.45", true},
		{"", "", false},
		{"2.0", MaxAPIVersion, true},
	}
	for _, c := range cases {
		got, err := negotiate(c.server)
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("negotiate(%q) = %q, %v; want %q ok=%v", c.server, got, err, c.want, c.ok)
		}
	}
	if compareVersions("1.5", "1.41") >= 0 || compareVersions("1.41", "1.41") != 0 {
		t.Error("compareVersions compares as strings")
	}
}

func frame(stream byte, payload string) []byte {
	h := make([]byte, 8)
	h[0] = stream
	binary.BigEndian.PutUint32(h[4:], uint32(len(payload)))
	return append(h, payload...)
}

func TestDemux(t *testing.T) {
	var in bytes.Buffer
	in.Write(frame(1, "out1\n"))
	in.Write(frame(2, "err1\n"))
	in.Write(frame(1, "out2\n"))
	var o, e bytes.Buffer
	if err := Demux(&in, &o, &e); err != nil {
		t.Fatal(err)
	}
	if o.String() != "out1\nout2\n" || e.String() != "err1\n" {
		t.Fatalf("%q %q", o.String(), e.String())
	}
	bad := frame(1, "abc")[:9]
	if err := Demux(bytes.NewReader(bad), &o, &e); err == nil {
		t.Fatal("truncated frame accepted")
	}
	if err := Demux(bytes.NewReader(frame(7, "x")), &o, &e); err == nil {
		t.Fatal("unknown stream accepted")
	}
}

func TestTailBuffer(t *testing.T) {
	tb := &tailBuffer{max: 5}
	for _, s := range []string{"ab", "cd", "efg", "h"} {
		tb.Write([]byte(s))
	}
	if string(tb.buf) != "defgh" {
		t.Fatalf("%q", tb.buf)
	}
	tb.Write([]byte("0123456789"))
	if string(tb.buf) != "56789" {
		t.Fatalf("%q", tb.buf)
	}
}

func TestParseLoadStream(t *testing.T) {
	refs, err := ParseLoadStream(strings.NewReader(`{"stream":"Loaded image: geniam-test:x\n"}` + "\n" + `{"stream":"Loaded image ID: sha256:abc\n"}`))
	if err != nil || strings.Join(refs, ",") != "geniam-test:x,sha256:abc" {
		t.Fatalf("%v %v", refs, err)
	}
	// Errors arrive inside the 200 stream.
	_, err = ParseLoadStream(strings.NewReader(`{"errorDetail":{"message":"unexpected EOF"},"error":"unexpected EOF"}`))
	var e *Error
	if !errors.As(err, &e) || e.Message != "unexpected EOF" {
		t.Fatalf("error in stream: %v", err)
	}
	if _, err := ParseLoadStream(strings.NewReader(`{"stream":`)); err == nil {
		t.Fatal("truncated stream accepted")
	}
}

func FuzzDemux(f *testing.F) {
	f.Add(append(frame(1, "out\n"), frame(2, "err\n")...))
	f.Add(frame(0, ""))
	f.Add([]byte{1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		var o, e bytes.Buffer
		if err := Demux(bytes.NewReader(b), &o, &e); err == nil && o.Len()+e.Len() > len(b) {
			t.Fatal("more output than input")
		}
	})
}

func FuzzParseLoadStream(f *testing.F) {
	f.Add([]byte(`{"stream":"Loaded image: a:b\n"}`))
	f.Add([]byte(`{"stream":"Loaded image ID: sha256:0123\n"}{"errorDetail":{"message":"x"}}`))
	f.Add([]byte(`{"error":"boom"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		refs, err := ParseLoadStream(bytes.NewReader(b))
		if err == nil {
			for _, r := range refs {
				if strings.ContainsAny(r, "\n") {
					t.Fatalf("ref with a newline: %q", r)
				}
			}
		}
	})
}

// TestEngine talks to the real engine when there is one.
func TestEngine(t *testing.T) {
	c := New("")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	v, err := c.Version(ctx)
	if err != nil {
		if os.Getenv("GENIAM_REQUIRE_DOCKER") == "1" {
			t.Fatalf("Docker required but unavailable: %v", err)
		}
		t.Skipf("skipping: no Docker engine: %v", err)
	}
	t.Logf("negotiated API version %s", v)
	if _, err := c.InspectContainer(ctx, "geniam-no-such-container-"+v); !IsNotFound(err) {
		t.Fatalf("inspecting a missing container: %v, want not found", err)
	}
	if err := c.RemoveContainer(ctx, "geniam-no-such-container"); err != nil {
		t.Fatalf("removing a missing container: %v", err)
	}
	if _, err := c.ListContainers(ctx, map[string]string{"org.geniam.none": "x"}); err != nil {
		t.Fatal(err)
	}
	// A load of garbage fails inside the 200 stream, or with a 4xx/5xx.
	if _, err := c.LoadImage(ctx, strings.NewReader("this is not a tar")); err == nil {
		t.Fatal("garbage image loaded")
	}
}
