// Package schemas holds the XML schemas geniam publishes for its own RSpec
// extension namespace (am.GeniamNamespace). The GENI schemas themselves are
// not copied here: they are published by GENI.
package schemas

import "embed"

// GeniamRSpecExt is the file name of the extension schema, published at
// rspec.GeniamSchemaURL.
const GeniamRSpecExt = "geniam-rspec-ext-1.xsd"

// FS holds the schema files, e.g. for serving them over HTTP.
//
//go:embed *.xsd
var FS embed.FS
