package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/geniam/geniam/am"
)

// The image URL comes from the experimenter's request, and the agent
// fetches it from inside the testbed's network: without a policy, a request
// could make the agent reach its own loopback services, the cloud metadata
// address or any private host, and the error told what answered. So:
//
//   - a destination is checked after name resolution, on the address really
//     dialled (a name cannot resolve to a public address when checked and a
//     private one when used);
//   - loopback, link-local, private (RFC 1918, ULA), unspecified, multicast
//     and other special-purpose addresses are refused unless the operator
//     lists the host in ImageHosts;
//   - when ImageHosts is not empty, only the hosts listed are fetched from;
//   - redirects are followed only on the same host (and never from https to
//     http);
//   - what the experimenter sees of a refusal or a failure is "refused by
//     policy" or the HTTP status of an allowed host, never the body, the
//     digest or the network error of what answered.

// ErrImagePolicy marks a fetch the destination policy refused.
var ErrImagePolicy = errors.New("refused by policy")

// imagePolicy decides which image hosts the agent may fetch from.
type imagePolicy struct {
	hosts []string // lower-case host names or IP literals, without port; empty: any public host
}

func newImagePolicy(hosts []string, containerStore string) imagePolicy {
	p := imagePolicy{}
	for _, h := range hosts {
		p.hosts = append(p.hosts, normHost(h))
	}
	// The operator's own v1 store is allowed by being configured.
	if u, err := url.Parse(containerStore); err == nil && u.Hostname() != "" {
		p.hosts = append(p.hosts, normHost(u.Hostname()))
	}
	return p
}

// normHost lower-cases a host and strips a port and IPv6 brackets.
func normHost(h string) string {
	h = strings.ToLower(strings.TrimSpace(h))
	if host, _, err := net.SplitHostPort(h); err == nil {
		h = host
	}
	return strings.Trim(h, "[]")
}

// listed reports whether the operator named host.
func (p imagePolicy) listed(host string) bool {
	return slices.Contains(p.hosts, normHost(host))
}

// checkURL is the check before any connection: the scheme, and the
// allow-list when there is one.
func (p imagePolicy) checkURL(u *url.URL) error {
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("%w: image URLs must be http or https", ErrImagePolicy)
	}
	if len(p.hosts) > 0 && !p.listed(u.Hostname()) {
		return fmt.Errorf("%w: %s is not one of this agent's image hosts", ErrImagePolicy, am.Clip(u.Hostname(), 100))
	}
	return nil
}

// publicAddr reports whether ip is an ordinary public unicast address.
func publicAddr(ip netip.Addr) bool {
	ip = ip.Unmap()
	if !ip.IsValid() || ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() ||
		ip.IsMulticast() || ip.IsUnspecified() || ip.IsInterfaceLocalMulticast() {
		return false
	}
	for _, p := range specialPrefixes {
		if p.Contains(ip) {
			return false
		}
	}
	return true
}

// specialPrefixes are the special-purpose ranges netip has no method for.
var specialPrefixes = func() []netip.Prefix {
	var out []netip.Prefix
	for _, s := range []string{
		"0.0.0.0/8",       // "this network"
		"100.64.0.0/10",   // carrier-grade NAT
		"192.0.0.0/24",    // IETF protocol assignments
		"192.0.2.0/24",    // documentation
		"198.18.0.0/15",   // benchmarking
		"198.51.100.0/24", // documentation
		"203.0.113.0/24",  // documentation
		"240.0.0.0/4",     // reserved, broadcast
		"64:ff9b::/96",    // NAT64 (could reach private IPv4)
		"64:ff9b:1::/48",  // local NAT64
		"2001:db8::/32",   // documentation
		"2002::/16",       // 6to4 (embeds any IPv4)
	} {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}()

// client returns the HTTP client of one fetch of host: its dialer refuses
// non-public addresses unless host is listed, it follows redirects only on
// host, and it uses no proxy from the environment (a proxy would dial for
// us, past the check).
func (p imagePolicy) client(host string) *http.Client {
	c := &http.Client{}
	{
		allowAny := p.listed(host)
		d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second,
			Control: func(_, address string, _ syscall.RawConn) error {
				ap, err := netip.ParseAddrPort(address)
				if err != nil {
					return fmt.Errorf("%w: unexpected address", ErrImagePolicy)
				}
				if !allowAny && !publicAddr(ap.Addr()) {
					return fmt.Errorf("%w: %s resolves to a loopback, link-local, private or reserved address", ErrImagePolicy, am.Clip(host, 100))
				}
				return nil
			}}
		c.Transport = &http.Transport{
			Proxy:                 nil,
			DialContext:           d.DialContext,
			TLSHandshakeTimeout:   10 * time.Second,
			ResponseHeaderTimeout: 30 * time.Second,
			MaxIdleConns:          1,
			IdleConnTimeout:       time.Second,
		}
	}
	c.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if len(via) >= 5 {
			return fmt.Errorf("%w: more than 5 redirects", ErrImagePolicy)
		}
		prev := via[len(via)-1].URL
		if normHost(req.URL.Hostname()) != normHost(prev.Hostname()) {
			return fmt.Errorf("%w: a redirect to another host", ErrImagePolicy)
		}
		if prev.Scheme == "https" && req.URL.Scheme != "https" {
			return fmt.Errorf("%w: a redirect from https to http", ErrImagePolicy)
		}
		return p.checkURL(req.URL)
	}
	return c
}

// fetchError is what the experimenter reads of a failed download: the
// policy's own words, a timeout, or a plain "could not be downloaded"; the
// cause (which may be what an internal service answered) is only logged.
func fetchError(ctx context.Context, host string, err error) error {
	switch {
	case errors.Is(err, ErrImagePolicy):
		// The policy error's text is ours; unwrap the url.Error around it.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		var oe *net.OpError
		if errors.As(err, &oe) {
			err = oe.Err
		}
		return &publicError{msg: "downloading image: " + err.Error(), cause: err}
	case ctx.Err() != nil:
		return &publicError{msg: "downloading image: interrupted (" + ctx.Err().Error() + ")", cause: err}
	default:
		return &publicError{msg: "downloading image: " + am.Clip(host, 100) + " could not be reached or did not answer", cause: err}
	}
}

// publicError carries a message safe for the experimenter and the cause,
// for the log.
type publicError struct {
	msg   string
	cause error
}

func (e *publicError) Error() string { return e.msg }
func (e *publicError) Unwrap() error { return e.cause }
