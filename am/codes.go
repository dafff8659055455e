package am

import "strconv"

// Code is a geni_code: the outcome of an AM API v3 call. The table is the one
// in the AM API v3 CommonConcepts attachment (geni-error-codes.xml), which gcf's
// error_util.py reproduces; see docs/architecture.md.
type Code int

const (
	ServerBusy                Code = -32001 // transport level; retry later
	Success                   Code = 0
	BadArgs                   Code = 1
	Error                     Code = 2
	Forbidden                 Code = 3
	BadVersion                Code = 4
	ServerError               Code = 5
	TooBig                    Code = 6
	Refused                   Code = 7
	TimedOut                  Code = 8
	DBError                   Code = 9
	RPCError                  Code = 10
	Unavailable               Code = 11
	SearchFailed              Code = 12
	Unsupported               Code = 13
	Busy                      Code = 14
	Expired                   Code = 15
	InProgress                Code = 16
	AlreadyExists             Code = 17
	MissingArgs               Code = 18
	OutOfRange                Code = 19
	CredentialInvalid         Code = 20
	CredentialExpired         Code = 21
	CredentialMismatch        Code = 22
	CredentialSignerUntrusted Code = 23
	VLANUnavailable           Code = 24
	InsufficientBandwidth     Code = 25
	InsufficientNodes         Code = 26
)

var codeLabels = map[Code]string{
	ServerBusy:                "SERVERBUSY",
	Success:                   "SUCCESS",
	BadArgs:                   "BADARGS",
	Error:                     "ERROR",
	Forbidden:                 "FORBIDDEN",
	BadVersion:                "BADVERSION",
	ServerError:               "SERVERERROR",
	TooBig:                    "TOOBIG",
	Refused:                   "REFUSED",
	TimedOut:                  "TIMEDOUT",
	DBError:                   "DBERROR",
	RPCError:                  "RPCERROR",
	Unavailable:               "UNAVAILABLE",
	SearchFailed:              "SEARCHFAILED",
	Unsupported:               "UNSUPPORTED",
	Busy:                      "BUSY",
	Expired:                   "EXPIRED",
	InProgress:                "INPROGRESS",
	AlreadyExists:             "ALREADYEXISTS",
	MissingArgs:               "MISSINGARGS",
	OutOfRange:                "OUTOFRANGE",
	CredentialInvalid:         "CREDENTIAL_INVALID",
	CredentialExpired:         "CREDENTIAL_EXPIRED",
	CredentialMismatch:        "CREDENTIAL_MISMATCH",
	CredentialSignerUntrusted: "CREDENTIAL_SIGNER_UNTRUSTED",
	VLANUnavailable:           "VLAN_UNAVAILABLE",
	InsufficientBandwidth:     "INSUFFICIENT_BANDWIDTH",
	InsufficientNodes:         "INSUFFICIENT_NODES",
}

// String returns the label of the code as the spec writes it (e.g. "SEARCHFAILED").
func (c Code) String() string {
	if s, ok := codeLabels[c]; ok {
		return s
	}
	return "CODE(" + strconv.Itoa(int(c)) + ")"
}

// Known reports whether c is in the geni_code table.
func (c Code) Known() bool { _, ok := codeLabels[c]; return ok }
