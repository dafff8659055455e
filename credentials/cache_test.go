package credentials

import (
	"crypto"
	"sync"
	"testing"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/credentials/devpki"
)

func TestCacheFollowsRoots(t *testing.T) {
	v := sampleVerifier(t)
	req := am.AuthRequest{Method: "Status", Caller: sampleCaller(t), Target: sampleSlice,
		Privileges: PrivilegesFor("Status"), Now: sampleNow, Credentials: []am.Credential{sfa(readTestdata(t, "slice-cred.xml"))}}
	first, err := v.Authorize(req)
	if err != nil {
		t.Fatal(err)
	}
	if len(v.cache) != 1 {
		t.Fatalf("%d cache entries, want 1", len(v.cache))
	}
	again, err := v.Authorize(req)
	if err != nil || again.Digest != first.Digest {
		t.Fatalf("cached answer %+v, %v", again, err)
	}
	// Another root: the cached verification must not survive.
	old := v.Roots()
	v.SetRoots(getPKI(t).roots())
	if len(v.cache) != 0 || len(v.chains) != 0 {
		t.Fatal("SetRoots kept cached verifications")
	}
	_, err = v.Authorize(req)
	wantRefusal(t, err, "client certificate not trusted: certificate urn:publicid:IDN+geni:gpo:gcf+user+alice does not chain to a trusted root")
	v.SetRoots(old)
	if _, err := v.Authorize(req); err != nil {
		t.Fatal(err)
	}
	// Another (trusted) caller: its own entry, and the owner check still
	// applies. Its certificates must be valid at sampleNow (getPKI's start an
	// hour before the test runs, which may be after sampleNow).
	ca, err := devpki.NewCA(devpki.Options{URN: urn("authority", "ca"), NotBefore: sampleNow.Add(-time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	alice, err := ca.Issue(devpki.Options{URN: urn("user", "alice"), NotBefore: sampleNow.Add(-time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	v.SetRoots(NewTrustRoots(append(old.Certs(), ca.Cert)...))
	if _, err := v.Authorize(req); err != nil {
		t.Fatal(err)
	}
	other := req
	other.Caller = caller(alice)
	_, err = v.Authorize(other)
	wantRefusal(t, err, "owner is urn:publicid:IDN+geni:gpo:gcf+user+alice, not the caller "+urn("user", "alice"))
}

func TestCacheBoundedAndConcurrent(t *testing.T) {
	p := getPKI(t)
	v := NewVerifier(p.roots(), Options{CacheSize: 3})
	var creds []string
	for i := 0; i < 6; i++ {
		c, err := IssueSliceCredential(signer(p.sa, crypto.SHA256), certs(p.alice), certs(p.slice), testExpires.Add(time.Duration(i)*time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		creds = append(creds, string(c))
	}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 12; i++ {
				if _, err := authorize(v, p, caller(p.alice), "Allocate", urn("slice", "s1"), creds[(g+i)%len(creds)]); err != nil {
					errs <- err
					return
				}
				if i%5 == 0 {
					v.SetRoots(p.roots())
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	v.mu.Lock()
	n := len(v.cache)
	v.mu.Unlock()
	if n > 3 {
		t.Fatalf("cache holds %d entries, bound is 3", n)
	}
}
