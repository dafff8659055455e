package am

// Namespaces of the RSpec extensions we produce or understand.
const (
	RSpecNamespace      = "http://www.geni.net/resources/rspec/3"
	OpStateNamespace    = "http://www.geni.net/resources/rspec/ext/opstate/1"
	UserNamespace       = "http://www.geni.net/resources/rspec/ext/user/1"
	GeniamNamespace     = "http://geniam.github.io/rspec/ext/geniam/1" // our own; XSD under schemas/
	RequestSchemaURL    = "http://www.geni.net/resources/rspec/3/request.xsd"
	AdSchemaURL         = "http://www.geni.net/resources/rspec/3/ad.xsd"
	ManifestSchemaURL   = "http://www.geni.net/resources/rspec/3/manifest.xsd"
	CodeVersion         = "0.1.0"
	AMType              = "geniam" // am_type in every return code
	APIVersion          = 3
	AllocateMode        = "geni_many"
	SingleAllocation    = 0 // geni_single_allocation, sent as an XML-RPC int
	CredentialTypeSFA   = "geni_sfa"
	CredentialTypeABAC  = "geni_abac"
	DefaultRSpecType    = "GENI"
	DefaultRSpecVersion = "3"
)

// StandardVersion is the GetVersion value of this aggregate at url with urn.
// The edge adds geni_api at the top level and in the value.
func StandardVersion(urn, url string) *Version {
	ext := []string{OpStateNamespace, UserNamespace, GeniamNamespace}
	return &Version{
		URN:         urn,
		URL:         url,
		CodeVersion: CodeVersion,
		RequestRSpecVersions: []RSpecVersion{{Type: DefaultRSpecType, Version: DefaultRSpecVersion,
			Schema: RequestSchemaURL, Namespace: RSpecNamespace, Extensions: ext}},
		AdRSpecVersions: []RSpecVersion{{Type: DefaultRSpecType, Version: DefaultRSpecVersion,
			Schema: AdSchemaURL, Namespace: RSpecNamespace, Extensions: ext}},
		CredentialTypes: []Credential{
			{Type: CredentialTypeSFA, Version: "2"},
			{Type: CredentialTypeSFA, Version: "3"},
			{Type: CredentialTypeABAC, Version: "1"},
		},
	}
}

// SupportsRSpec reports whether v names an RSpec type/version we speak
// (compared case-insensitively, as the spec says).
func SupportsRSpec(v RSpecVersion) bool {
	return equalFold(v.Type, DefaultRSpecType) && v.Version == DefaultRSpecVersion
}

// CheckRSpecVersion is the geni_rspec_version rule of the calls that return
// an RSpec (ListResources, Describe, Provision): the option is required and
// must name a version we speak.
func CheckRSpecVersion(o Options) error {
	v := o.RSpecVersion
	if v == nil || v.Type == "" || v.Version == "" {
		return Errorf(BadArgs, "option geni_rspec_version is required, e.g. {type: \"GENI\", version: \"3\"}")
	}
	if !SupportsRSpec(*v) {
		return Errorf(BadVersion, "RSpec type %q version %q is not supported (GetVersion lists %s %s)",
			v.Type, v.Version, DefaultRSpecType, DefaultRSpecVersion)
	}
	return nil
}

func equalFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}
