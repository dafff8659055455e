// Package credentials is geniam's trust decision: it verifies GENI
// credentials natively and decides whether a caller may run an AM API call
// (../shared/spec/credentials.md). Verifier implements am.Authorizer.
//
// The pieces, in the order a credential meets them:
//
//   - xmlparse.go: a strict XML parser for untrusted input (no DTD, bounded
//     size and depth, namespace checks) that builds an etree document.
//   - document.go: the parsed document with its xml:id index; an id used twice
//     is refused, so a Reference cannot be steered to a different element
//     than the one the verifier reads (signature wrapping).
//   - c14n.go: inclusive C14N 1.0 and exclusive C14N of an element in place in
//     its document, which is what libxml2/xmlsec1 sign.
//   - dsig.go: XML-DSig verification (same-document #id references,
//     enveloped + C14N transforms, sha1/256/512, rsa-sha1/256/512) and signing.
//   - credential.go: the SFA and ABAC credential model (owner and target
//     certificates, expiry, privileges with "*" expanded, the parent chain).
//   - trust.go: the trusted roots; chains built by crypto/x509 with gcf's
//     namespace rule (every issuer is a GENI authority over its subject).
//   - rights.go: gcf's privilege table and the operations each AM method needs
//     (PrivilegesFor).
//   - verify.go: the decision (credentials.md §5 and §8): signatures of the
//     credential and every parent, chains, delegation rules, issuer
//     authority, then expiry, owner (or the spoken-for user), target and
//     privileges; at least one credential must pass. A refusal is an *am.Err
//     with code Forbidden naming the failed check of the credential that got
//     furthest. Verified credentials and certificate chains are cached
//     (bounded, keyed by content and caller, voided when the roots change).
//   - issue.go: issuing user and slice credentials, delegations and
//     speaks-for statements in gcf's shape, for the development
//     clearinghouse (package devch) and tests.
//
// Tests check all of this against the real gcf-issued samples and against
// credentials and C14N corner cases signed by xmlsec1, and check that xmlsec1
// accepts what we sign.
package credentials
