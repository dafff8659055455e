package amtest

import (
	"encoding/xml"
	"io"
	"strings"
)

// WellFormedXML reports whether doc is well-formed XML, as encoding/xml
// reads it: the check of documents we write (RSpecs, SVG) that no schema
// validates.
func WellFormedXML(doc string) error {
	d := xml.NewDecoder(strings.NewReader(doc))
	for {
		_, err := d.Token()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}
