package webhook

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/net/idna"

	"github.com/chorus-sync/chorus"
)

// MaxURLLen bounds a webhook URL.
const MaxURLLen = 2048

// ErrRefusedAddress is the cause of a refused connection: the webhook's
// host resolved to an address webhooks may not reach.
var ErrRefusedAddress = errors.New("webhook: address not allowed")

// Policy is the SSRF policy: which addresses webhooks may reach. The zero
// Policy allows only public unicast addresses.
type Policy struct {
	// AllowPrivate also allows loopback, private (RFC 1918, RFC 4193) and
	// shared (RFC 6598) addresses and names such as localhost: for
	// development and tests. Link-local (cloud metadata), unspecified,
	// multicast, broadcast and reserved addresses stay refused.
	AllowPrivate bool
	// Self is this server's public URL (--public-url), "" if none. A new
	// webhook URL that addresses it (the same host and port, a scheme's
	// default port when none is given, and a path under its path) is
	// refused at configuration time, since it would call this server. An
	// app beside it on the same host (another port, or another path behind
	// the same proxy) is not, and URLs set before keep their webhooks:
	// every Chorus node answers a webhook request 508 (LoopHeader), so none
	// loops.
	Self string
}

// addressesSelf reports whether u (its host lowered, as the dialer sees
// it) addresses the public URL p.Self.
func (p Policy) addressesSelf(u *url.URL, host string) bool {
	self, err := url.Parse(p.Self)
	if p.Self == "" || err != nil || self.Host == "" {
		return false
	}
	if !strings.EqualFold(self.Hostname(), host) && !strings.EqualFold(self.Hostname(), u.Hostname()) {
		return false
	}
	if effectivePort(self) != effectivePort(u) {
		return false
	}
	prefix := strings.TrimSuffix(self.EscapedPath(), "/")
	path := u.EscapedPath()
	return prefix == "" || path == prefix || strings.HasPrefix(path, prefix+"/")
}

// effectivePort is u's port, or its scheme's default.
func effectivePort(u *url.URL) string {
	if p := u.Port(); p != "" {
		return strings.TrimLeft(p, "0")
	}
	if strings.EqualFold(u.Scheme, "https") {
		return "443"
	}
	return "80"
}

// CheckURL checks a webhook URL at configuration time: an absolute http(s)
// URL of at most MaxURLLen bytes whose host is not an
// address (or a name such as localhost) the policy refuses. Names are
// resolved only when connecting, where the dialer checks again. It returns
// a 54051 *chorus.Error. The empty URL (no webhook) is fine.
func (p Policy) CheckURL(raw string) error {
	return p.checkURL(raw, true)
}

// checkURL is CheckURL; the rule on the query's characters applies only
// when configuring (newURL): a URL set before the rule came keeps working
// with the receivers that took it.
func (p Policy) checkURL(raw string, newURL bool) error {
	if raw == "" {
		return nil
	}
	bad := func(why string) error {
		return chorus.Errorf(chorus.ErrInvalidWebhookURL, "Invalid webhook URL: %s", why)
	}
	if len(raw) > MaxURLLen {
		return bad(fmt.Sprintf("at most %d characters", MaxURLLen))
	}

	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Opaque != "" {
		return bad("expected an absolute http(s) URL")
	}
	// user:password@ is allowed, as Twilio allows it: the webhook goes
	// with HTTP Basic authentication (see Dispatcher.attempt).
	// The path is sent percent-encoded, but the query as it is (and signed
	// as it is): a space or a non-ASCII byte there makes a request line
	// receivers refuse (400), and every webhook would be given up on.
	if newURL && strings.IndexFunc(u.RawQuery, func(r rune) bool { return r <= ' ' || r >= 0x7f }) >= 0 {
		return bad("a space or non-ASCII character in the query: percent-encode it")
	}
	// What is signed is the URL as requested; validators are given the
	// URL as set. A fragment is never sent, and a space or control
	// character in the path is sent percent-encoded: the two would differ,
	// and every signature would fail to validate.
	if newURL && strings.Contains(raw, "#") {
		return bad("a #fragment is never sent: remove it")
	}
	if newURL && strings.IndexFunc(rawPath(raw), func(r rune) bool { return r <= ' ' || r == 0x7f }) >= 0 {
		return bad("a space or control character in the path: percent-encode it")
	}
	if newURL && strings.ContainsAny(rawPath(raw), "\"<>\\^`{|}") {
		// Sent (and signed) percent-encoded too: Twilio's validators,
		// given the URL as set, fail every signature.
		return bad("a character that is sent percent-encoded (\" < > \\ ^ ` { | }) in the path: percent-encode it")
	}
	host := strings.ToLower(u.Hostname())
	if host == "" {
		return bad("expected a host")
	}
	if strings.IndexFunc(host, func(r rune) bool { return r >= 0x80 }) >= 0 {
		// Checked as the HTTP client will dial it: net/http maps a
		// non-ASCII host with IDNA's lookup profile, which turns
		// full-width digits into ASCII ones ("１２７.0.0.1" is 127.0.0.1).
		a, err := idna.Lookup.ToASCII(host)
		if err != nil {
			return bad("invalid international host name")
		}
		host = strings.ToLower(a)
	}
	if port := u.Port(); port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return bad("invalid port")
		}
	}
	if newURL && p.addressesSelf(u, host) {
		return bad("the webhook may not call this server (its public URL)")
	}
	if addr, numeric, ok := parseHostAddr(host); numeric {
		if !ok {
			return bad("malformed numeric host")
		}
		if err := p.checkAddr(addr); err != nil {
			return bad(err.Error())
		}
		if _, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")); newURL && err != nil {
			// 0x7f000001, 127.1, 0177.0.0.1…: the HTTP client looks such a
			// host up as a name (in DNS, off this machine) and never
			// reaches it, so every webhook would fail.
			return bad("write the address as " + addr.String() + ": the form given is looked up as a host name when connecting")
		}
		return nil
	}
	if !p.AllowPrivate && (host == "localhost" || strings.HasSuffix(host, ".localhost") ||
		host == "localhost." || strings.HasSuffix(host, ".localhost.")) {
		return bad("loopback hosts are not allowed")
	}
	return nil
}

// parseHostAddr parses host as an IP address, including the forms
// inet_aton accepts (0x7f000001, 2130706433, 127.1, 0177.0.0.1), which
// some resolvers turn into addresses. numeric reports that host is one of
// those forms; ok that it denotes a valid address.
func parseHostAddr(host string) (addr netip.Addr, numeric, ok bool) {
	h := strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if a, err := netip.ParseAddr(h); err == nil {
		return a.WithZone(""), true, true
	}
	if strings.Contains(h, ":") {
		return netip.Addr{}, true, false // something IPv6-like that does not parse
	}
	parts := strings.Split(strings.TrimSuffix(h, "."), ".")
	if len(parts) > 4 {
		return netip.Addr{}, false, false
	}
	nums := make([]uint64, len(parts))
	for i, part := range parts {
		n, err := strconv.ParseUint(part, 0, 32) // 0x…, 0… (octal), decimal
		if part == "" || err != nil {
			if i == len(parts)-1 && !isNumberish(part) {
				return netip.Addr{}, false, false // a name (its last label is not a number)
			}
			return netip.Addr{}, isNumberish(part), false
		}
		nums[i] = n
	}
	// a, a.b (b: 24 bits), a.b.c (c: 16 bits), a.b.c.d.
	var v uint64
	last := len(nums) - 1
	for i, n := range nums[:last] {
		if n > 255 {
			return netip.Addr{}, true, false
		}
		v |= n << (24 - 8*uint(i))
	}
	if nums[last] >= 1<<(32-8*uint(last)) {
		return netip.Addr{}, true, false
	}
	v |= nums[last]
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), true, true
}

// isNumberish reports whether s looks like a number of inet_aton (digits,
// or 0x and hex digits).
func isNumberish(s string) bool {
	if s == "" {
		return false
	}
	if rest, ok := strings.CutPrefix(strings.ToLower(s), "0x"); ok {
		s = rest
		for _, r := range s {
			if !strings.ContainsRune("0123456789abcdef", r) {
				return false
			}
		}
		return true
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

// rawPath is the path of absolute URL raw as written (no query, no
// fragment).
func rawPath(raw string) string {
	_, rest, _ := strings.Cut(raw, "//")
	i := strings.IndexByte(rest, '/')
	if i < 0 {
		return ""
	}
	rest = rest[i:]
	if j := strings.IndexAny(rest, "?#"); j >= 0 {
		rest = rest[:j]
	}
	return rest
}

var (
	sharedNet  = netip.MustParsePrefix("100.64.0.0/10")
	thisNet    = netip.MustParsePrefix("0.0.0.0/8")
	reserved4  = netip.MustParsePrefix("240.0.0.0/4") // and broadcast
	ietf4      = netip.MustParsePrefix("192.0.0.0/24")
	bench4     = netip.MustParsePrefix("198.18.0.0/15")
	nat64      = netip.MustParsePrefix("64:ff9b::/96")
	nat64Local = netip.MustParsePrefix("64:ff9b:1::/48")
	sixToFour  = netip.MustParsePrefix("2002::/16")
	teredo     = netip.MustParsePrefix("2001::/32")
	discard6   = netip.MustParsePrefix("100::/64")
	// Documentation (RFC 5737, 3849, 9637) and deprecated site-local
	// (RFC 3879) ranges: nothing a webhook should reach.
	doc4a      = netip.MustParsePrefix("192.0.2.0/24")
	doc4b      = netip.MustParsePrefix("198.51.100.0/24")
	doc4c      = netip.MustParsePrefix("203.0.113.0/24")
	doc6       = netip.MustParsePrefix("2001:db8::/32")
	doc6new    = netip.MustParsePrefix("3fff::/20")
	siteLocal6 = netip.MustParsePrefix("fec0::/10")
	compat4    = netip.MustParsePrefix("::/96") // IPv4-compatible (deprecated)
	// IPv4-translated (RFC 2765, SIIT): ::ffff:0:a.b.c.d, which a
	// translator turns into a.b.c.d.
	translated4 = netip.MustParsePrefix("::ffff:0:0:0/96")
)

// checkAddr returns why p refuses a, or nil.
func (p Policy) checkAddr(a netip.Addr) error {
	a = a.Unmap().WithZone("")
	switch {
	case !a.IsValid():
		return errors.New("invalid address")
	case a.IsUnspecified() || (a.Is4() && thisNet.Contains(a)):
		return errors.New("unspecified addresses are not allowed")
	case a.IsMulticast() || a.IsLinkLocalMulticast() || a.IsInterfaceLocalMulticast():
		return errors.New("multicast addresses are not allowed")
	case a.IsLinkLocalUnicast():
		return errors.New("link-local addresses are not allowed")
	case a.Is4() && (reserved4.Contains(a) || ietf4.Contains(a) || bench4.Contains(a)), a.Is6() && discard6.Contains(a):
		return errors.New("reserved addresses are not allowed")
	case a.Is6() && (nat64.Contains(a) || nat64Local.Contains(a) || sixToFour.Contains(a) || teredo.Contains(a) || translated4.Contains(a) || (compat4.Contains(a) && !a.IsLoopback())):
		// Translation prefixes embed IPv4 addresses that could be anything.
		return errors.New("IPv4-translating addresses are not allowed")
	case p.AllowPrivate:
		return nil // development and test set-ups use documentation ranges too
	case a.Is4() && (doc4a.Contains(a) || doc4b.Contains(a) || doc4c.Contains(a)),
		a.Is6() && (doc6.Contains(a) || doc6new.Contains(a) || siteLocal6.Contains(a)):
		return errors.New("reserved addresses are not allowed")
	case a.IsLoopback():
		return errors.New("loopback addresses are not allowed")
	case a.IsPrivate() || sharedNet.Contains(a):
		return errors.New("private addresses are not allowed")
	case !a.IsGlobalUnicast():
		return errors.New("non-unicast addresses are not allowed")
	}
	return nil
}

// control is the dialer's Control hook: it runs after name resolution,
// for the exact address about to be connected to, before the connection
// is attempted, so DNS rebinding cannot get around the policy.
func (p Policy) control(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrRefusedAddress, address, err)
	}
	if err := p.checkAddr(ap.Addr()); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrRefusedAddress, ap.Addr(), err)
	}
	return nil
}

// NewClient returns the HTTP client webhooks are sent with: every
// connection's address checked against p after name resolution, no
// proxy from the environment, redirects not followed (a 3xx is the
// answer), and timeout per attempt.
func NewClient(p Policy, timeout time.Duration, resolver *net.Resolver) *http.Client {
	dialer := &net.Dialer{Timeout: timeout, Control: p.control, Resolver: resolver}
	tr := &http.Transport{
		Proxy:                 nil,
		DialContext:           dialer.DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          100,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   timeout,
		ResponseHeaderTimeout: timeout,
	}
	return &http.Client{
		Transport: tr,
		Timeout:   timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}
