package geniapi

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/geniam/geniam/am"
	"github.com/geniam/geniam/am/xmlrpc"
)

// This file turns decoded XML-RPC params into typed arguments. Every failure
// is an *am.Err with BadArgs (or BadVersion) whose message names the argument.

func badArgs(format string, args ...any) *am.Err {
	return am.Errorf(am.BadArgs, format, args...)
}

func stringArg(v any, what string) (string, error) {
	s, ok := v.(string)
	if !ok {
		return "", badArgs("%s must be a string, not a %s", what, xmlrpc.TypeName(v))
	}
	return s, nil
}

// MaxCredentials bounds the credentials of one call. Clients send one to
// three (a slice credential, a user credential, a speaks-for credential);
// every credential costs an XML signature check, so thousands of them are
// refused before any is looked at.
const MaxCredentials = 64

// parseCredentials reads the credentials argument: an array of
// {geni_type, geni_version, geni_value} structs. A bare string is a v2-style
// credential and is taken as geni_sfa version 3, as gcf does.
func parseCredentials(v any) ([]am.Credential, error) {
	list, ok := v.([]any)
	if !ok {
		return nil, badArgs("credentials must be an array, not a %s", xmlrpc.TypeName(v))
	}
	if len(list) > MaxCredentials {
		return nil, badArgs("credentials has %d entries, more than the limit of %d", len(list), MaxCredentials)
	}
	creds := make([]am.Credential, 0, len(list))
	for i, item := range list {
		switch c := item.(type) {
		case string:
			creds = append(creds, am.Credential{Type: am.CredentialTypeSFA, Version: "3", Value: c})
		case map[string]any:
			var cred am.Credential
			var err error
			if cred.Type, err = credentialField(c, "geni_type", i); err != nil {
				return nil, err
			}
			if cred.Version, err = credentialField(c, "geni_version", i); err != nil {
				return nil, err
			}
			if cred.Value, err = credentialField(c, "geni_value", i); err != nil {
				return nil, err
			}
			creds = append(creds, cred)
		default:
			return nil, badArgs("credentials[%d] must be a struct {geni_type, geni_version, geni_value}, not a %s", i, xmlrpc.TypeName(item))
		}
	}
	return creds, nil
}

func credentialField(c map[string]any, name string, i int) (string, error) {
	v, ok := c[name]
	if !ok {
		return "", badArgs("credentials[%d] has no %s", i, name)
	}
	switch x := v.(type) {
	case string:
		return x, nil
	case int64:
		if name == "geni_version" { // a version sent as a number is still clear
			return strconv.FormatInt(x, 10), nil
		}
	}
	return "", badArgs("credentials[%d].%s must be a string, not a %s", i, name, xmlrpc.TypeName(v))
}

// parseURNs reads the urns argument: one slice URN, or sliver URNs (of one
// slice, which only the aggregate can check).
func parseURNs(v any) ([]string, error) {
	list, ok := v.([]any)
	if !ok {
		return nil, badArgs("urns must be an array of strings, not a %s", xmlrpc.TypeName(v))
	}
	if len(list) == 0 {
		return nil, badArgs("urns is empty: give a slice URN or sliver URNs")
	}
	urns := make([]string, 0, len(list))
	slices, slivers := 0, 0
	for i, item := range list {
		s, ok := item.(string)
		if !ok {
			return nil, badArgs("urns[%d] must be a string, not a %s", i, xmlrpc.TypeName(item))
		}
		u, err := am.ParseURN(s)
		if err != nil {
			return nil, badArgs("urns[%d]: %v", i, err)
		}
		s = u.String()
		switch u.Type {
		case "slice":
			slices++
		case "sliver":
			slivers++
		default:
			return nil, badArgs("urns[%d] %q has type %q, want slice or sliver", i, s, u.Type)
		}
		urns = append(urns, s)
	}
	if slices > 1 {
		return nil, badArgs("urns names %d slices; give one slice URN, or sliver URNs of one slice", slices)
	}
	if slices == 1 && slivers > 0 {
		return nil, badArgs("urns mixes a slice URN with sliver URNs; give one or the other")
	}
	return urns, nil
}

func parseSliceURN(v any, what string) (string, error) {
	s, err := stringArg(v, what)
	if err != nil {
		return "", err
	}
	u, err := am.URNOfType(s, "slice")
	if err != nil {
		return "", badArgs("%s: %v", what, err)
	}
	return u.String(), nil
}

// ParseTime reads an RFC 3339 time as GENI clients send it: with a zone,
// or without one (omni --no-tz, meaning UTC), with or without fractional
// seconds; a space may stand for the T.
func ParseTime(s string) (time.Time, error) {
	s = strings.TrimSpace(s)
	if len(s) > 10 && s[10] == ' ' {
		s = s[:10] + "T" + s[11:]
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05Z0700", "2006-01-02T15:04:05"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("%q is not an RFC 3339 time (e.g. 2026-01-02T15:04:05Z)", s)
}

func timeArg(v any, what string) (time.Time, error) {
	switch x := v.(type) {
	case string:
		t, err := ParseTime(x)
		if err != nil {
			return time.Time{}, badArgs("%s: %v", what, err)
		}
		return t, nil
	case time.Time: // a <dateTime.iso8601>, although GENI sends strings
		return x.UTC(), nil
	}
	return time.Time{}, badArgs("%s must be an RFC 3339 string, not a %s", what, xmlrpc.TypeName(v))
}

func boolOption(v any, name string) (bool, error) {
	switch x := v.(type) {
	case bool:
		return x, nil
	case int64: // some clients send <int>0/1</int> for booleans
		if x == 0 || x == 1 {
			return x == 1, nil
		}
	}
	return false, badArgs("option %s must be a boolean, not %s", name, describe(v))
}

func describe(v any) string {
	switch x := v.(type) {
	case int64:
		return "the int " + strconv.FormatInt(x, 10)
	case string:
		if len(x) > 40 {
			x = x[:40] + "…"
		}
		return fmt.Sprintf("the string %q", x)
	}
	return "a " + xmlrpc.TypeName(v)
}

// parseOptions reads the options struct. Unknown options are ignored; a
// standard option of the wrong type is BadArgs.
func parseOptions(v any) (am.Options, error) {
	raw, ok := v.(map[string]any)
	if !ok {
		return am.Options{}, badArgs("options must be a struct, not a %s", xmlrpc.TypeName(v))
	}
	o := am.Options{Raw: raw}
	var err error
	for name, val := range raw {
		switch name {
		case "geni_rspec_version":
			o.RSpecVersion, err = parseRSpecVersion(val)
		case "geni_available":
			o.Available, err = boolOption(val, name)
		case "geni_compressed":
			o.Compressed, err = boolOption(val, name)
		case "geni_best_effort":
			o.BestEffort, err = boolOption(val, name)
		case "geni_extend_alap":
			o.ExtendALAP, err = boolOption(val, name)
		case "geni_end_time", "geni_start_time":
			var t time.Time
			if t, err = timeArg(val, "option "+name); err == nil {
				if name == "geni_end_time" {
					o.EndTime = &t
				} else {
					o.StartTime = &t
				}
			}
		case "geni_users":
			o.Users, err = parseUsers(val)
			o.UsersSet = true
		case "geni_speaking_for":
			o.SpeakingFor, err = stringArg(val, "option geni_speaking_for")
		}
		if err != nil {
			return am.Options{}, err
		}
	}
	return o, nil
}

func parseRSpecVersion(v any) (*am.RSpecVersion, error) {
	m, ok := v.(map[string]any)
	if !ok {
		return nil, badArgs("option geni_rspec_version must be a struct {type, version}, not a %s", xmlrpc.TypeName(v))
	}
	var rv am.RSpecVersion
	for _, f := range []struct {
		name string
		dst  *string
	}{{"type", &rv.Type}, {"version", &rv.Version}} {
		val, ok := m[f.name]
		if !ok {
			return nil, badArgs("option geni_rspec_version has no %s", f.name)
		}
		switch x := val.(type) {
		case string:
			*f.dst = x
		case int64:
			*f.dst = strconv.FormatInt(x, 10)
		case float64:
			*f.dst = strconv.FormatFloat(x, 'f', -1, 64)
		default:
			return nil, badArgs("option geni_rspec_version.%s must be a string, not a %s", f.name, xmlrpc.TypeName(val))
		}
	}
	return &rv, nil
}

func parseUsers(v any) ([]am.User, error) {
	list, ok := v.([]any)
	if !ok {
		return nil, badArgs("option geni_users must be an array of {urn, keys} structs, not a %s", xmlrpc.TypeName(v))
	}
	users := make([]am.User, 0, len(list))
	for i, item := range list {
		m, ok := item.(map[string]any)
		if !ok {
			return nil, badArgs("option geni_users[%d] must be a struct {urn, keys}, not a %s", i, xmlrpc.TypeName(item))
		}
		urn, ok := m["urn"].(string)
		if !ok {
			return nil, badArgs("option geni_users[%d] has no string urn", i)
		}
		if _, err := am.ParseURN(urn); err != nil {
			return nil, badArgs("option geni_users[%d].urn: %v", i, err)
		}
		keyList, ok := m["keys"].([]any)
		if !ok {
			return nil, badArgs("option geni_users[%d] has no keys array", i)
		}
		u := am.User{URN: urn, Keys: make([]string, 0, len(keyList))}
		for j, k := range keyList {
			s, ok := k.(string)
			if !ok {
				return nil, badArgs("option geni_users[%d].keys[%d] must be a string, not a %s", i, j, xmlrpc.TypeName(k))
			}
			u.Keys = append(u.Keys, s)
		}
		users = append(users, u)
	}
	return users, nil
}
