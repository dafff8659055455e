package credentials

import (
	"bytes"
	"fmt"
	"io"
	"strings"

	"github.com/beevik/etree"
)

// parseWithEtree is the reference the fast parser is checked against:
// etree over encoding/xml, plus the attribute-value normalization
// encoding/xml does not do.
func parseWithEtree(raw []byte) (*etree.Document, error) {
	doc := etree.NewDocument()
	doc.ReadSettings = etree.ReadSettings{
		PreserveDuplicateAttrs: true,
		PreserveCData:          true,
		MaxDepth:               maxDepth,
		CharsetReader:          utf8Only,
	}
	if err := doc.ReadFromBytes(normalizeAttrWhitespace(raw)); err != nil {
		return nil, err
	}
	return doc, nil
}

func utf8Only(charset string, r io.Reader) (io.Reader, error) {
	switch strings.ToLower(charset) {
	case "utf-8", "utf8", "us-ascii", "ascii":
		return r, nil
	}
	return nil, fmt.Errorf("unsupported encoding %q", charset)
}

// normalizeAttrWhitespace applies XML attribute-value normalization to
// literal tab, CR and LF inside attribute values (each becomes a space; CRLF
// one space). encoding/xml does not do it, and C14N must see the normalized
// value: a literal newline in an attribute canonicalizes as a space, while a
// &#10; reference stays a newline. The input is returned unchanged (no copy)
// when there is nothing to normalize, which is the case for every real
// credential.
func normalizeAttrWhitespace(raw []byte) []byte {
	var out []byte // allocated on the first change
	done := 0      // raw[:done] has been copied to out
	inTag, quote := false, byte(0)
	for i := 0; i < len(raw); i++ {
		b := raw[i]
		switch {
		case quote != 0:
			if b == quote {
				quote = 0
			} else if b == '\t' || b == '\n' || b == '\r' {
				if out == nil {
					out = make([]byte, 0, len(raw))
				}
				out = append(out, raw[done:i]...)
				if b != '\n' || i == 0 || raw[i-1] != '\r' { // CRLF: the CR already became the space
					out = append(out, ' ')
				}
				done = i + 1
			}
		case inTag:
			if b == '"' || b == '\'' {
				quote = b
			} else if b == '>' {
				inTag = false
			}
		case b == '<':
			rest := raw[i:]
			switch {
			case bytes.HasPrefix(rest, []byte("<!--")):
				i = skipTo(raw, i+4, "-->")
			case bytes.HasPrefix(rest, []byte("<![CDATA[")):
				i = skipTo(raw, i+9, "]]>")
			case bytes.HasPrefix(rest, []byte("<?")):
				i = skipTo(raw, i+2, "?>")
			case bytes.HasPrefix(rest, []byte("<!")):
				i = skipTo(raw, i+2, ">")
			default:
				inTag = true
			}
		}
	}
	if out == nil {
		return raw
	}
	return append(out, raw[done:]...)
}

// skipTo returns the index of the last byte of the first end marker at or
// after i (or the last index of raw).
func skipTo(raw []byte, i int, end string) int {
	if i >= len(raw) {
		return len(raw) - 1
	}
	j := bytes.Index(raw[i:], []byte(end))
	if j < 0 {
		return len(raw) - 1
	}
	return i + j + len(end) - 1
}

// sameAsEtree checks the fast parser against etree on one input: when the
// fast parser accepts, etree must accept too, and both trees must
// canonicalize identically (comments and PIs included, via their C14N).
func sameAsEtree(raw []byte) error {
	fast, err := parseXML(raw)
	if err != nil {
		return nil // stricter than encoding/xml is allowed
	}
	ref, err := parseWithEtree(raw)
	if err != nil && strings.Contains(err.Error(), "invalid XML name") {
		// encoding/xml applies the 4th-edition name rules; we, like libxml2,
		// the wider 5th-edition ones.
		return nil
	}
	if err != nil {
		return fmt.Errorf("fast parser accepted what etree refuses (%v)", err)
	}
	a, errA := Canonicalize(fast.Root())
	b, errB := Canonicalize(ref.Root())
	if (errA == nil) != (errB == nil) {
		return fmt.Errorf("C14N errors differ: %v / %v", errA, errB)
	}
	if !bytes.Equal(a, b) {
		return fmt.Errorf("C14N differs:\nfast  %q\netree %q", a, b)
	}
	return nil
}
