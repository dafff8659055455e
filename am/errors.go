package am

import (
	"errors"
	"fmt"
	"strings"
)

// Err is the application error every layer returns. It carries the geni_code the
// caller will see, the operation and the URN it concerns, and a message written
// for the experimenter. The underlying Go error (Err) is for the log only: the
// XML-RPC edge never shows it to the caller.
type Err struct {
	Code Code
	Op   string // AM API method or internal operation, e.g. "Allocate"
	URN  string // slice or sliver the error concerns, if any
	Msg  string // human-readable, safe to return in `output`
	Err  error  // underlying cause, logged, never returned to the caller
}

func (e *Err) Error() string {
	s := e.Code.String()
	if e.Op != "" {
		s = e.Op + ": " + s
	}
	if e.Msg != "" {
		s += ": " + e.Msg
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *Err) Unwrap() error { return e.Err }

// Errorf builds an *Err with a formatted, caller-safe message.
func Errorf(code Code, format string, args ...any) *Err {
	return &Err{Code: code, Msg: fmt.Sprintf(format, args...)}
}

// Wrap records an internal cause behind a caller-safe message.
func Wrap(code Code, cause error, format string, args ...any) *Err {
	return &Err{Code: code, Msg: fmt.Sprintf(format, args...), Err: cause}
}

// CodeOf returns the geni_code of err: Success for nil, the code of an *Err in
// the chain, and ServerError for anything else (an internal failure).
func CodeOf(err error) Code {
	if err == nil {
		return Success
	}
	var e *Err
	if errors.As(err, &e) {
		return e.Code
	}
	return ServerError
}

// MessageOf returns the caller-safe message of err, or "" when err is not an
// *Err (internal errors must not leak: the edge substitutes a log id).
func MessageOf(err error) string {
	var e *Err
	if errors.As(err, &e) {
		return e.Msg
	}
	return ""
}

// SliceShutDown is the refusal of any call on a shut-down slice but an
// operator's: from the gate, or from a Store when Shutdown came meanwhile.
func SliceShutDown(slice string) *Err {
	return &Err{Code: Forbidden, URN: slice, Msg: "slice " + slice + " has been shut down; only an operator can restore it"}
}

// HideURN returns err with every mention of urn in its caller-visible
// message replaced by what, for refusals about an object the caller did not
// name (the slice of a sliver URN may be another user's). The URN stays in
// the log's copy.
func HideURN(err error, urn, what string) error {
	var e *Err
	if urn == "" || !errors.As(err, &e) || !strings.Contains(e.Msg, urn) {
		return err
	}
	c := *e
	c.Msg = strings.ReplaceAll(e.Msg, urn, what)
	return &c
}
