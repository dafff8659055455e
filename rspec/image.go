package rspec

import (
	"net/url"
	"strings"

	"github.com/geniam/geniam/am"
)

// parseDiskImage reads a request disk_image: where the `docker save` tar is
// and the sha256 digest that pins it. Accepted forms, in order of preference:
//
//	<disk_image name="https://h/img.tar" geniam:sha256="<hex>"/>
//	<disk_image name="https://h/img.tar#sha256=<hex>"/>
//	<disk_image name="sha256:<hex>" url="https://h/img.tar"/>   (url: APT-style, not in the schema)
//
// Digests given in several places must agree.
func (r *RSpecs) parseDiskImage(clientID string, e *element) (am.Image, error) {
	name, _ := e.attr("name")
	location, hasURL := e.attr("url")
	name, location = strings.TrimSpace(name), strings.TrimSpace(location)
	var digests []string
	if !hasURL || location == "" {
		location = name
	} else if d, ok := strings.CutPrefix(name, "sha256:"); ok {
		digests = append(digests, d)
	}
	if location == "" {
		return am.Image{}, am.Errorf(am.BadArgs, "node %q: disk_image has no name (the http(s) URL of a docker save tar)", clientID)
	}
	if strings.HasPrefix(location, "sha256:") {
		return am.Image{}, am.Errorf(am.BadArgs, "node %q: disk_image name %q is a digest, not a location: put the tar's URL in name and the digest in geniam:sha256", clientID, location)
	}
	if d, ok := e.attrNS(am.GeniamNamespace, "sha256"); ok {
		digests = append(digests, strings.TrimSpace(d))
	}
	if i := strings.Index(location, "#"); i >= 0 {
		frag := location[i+1:]
		location = location[:i]
		d, ok := strings.CutPrefix(frag, "sha256=")
		if !ok {
			return am.Image{}, am.Errorf(am.BadArgs, "node %q: disk_image URL fragment %q is not #sha256=<hex>", clientID, frag)
		}
		digests = append(digests, d)
	}
	if err := r.checkImageLocation(clientID, location); err != nil {
		return am.Image{}, err
	}
	im := am.Image{URL: location}
	for _, d := range digests {
		d = strings.ToLower(d)
		if !isSHA256(d) {
			return am.Image{}, am.Errorf(am.BadArgs, "node %q: disk_image digest %q is not a sha256 digest (64 hex digits)", clientID, d)
		}
		if im.SHA256 != "" && im.SHA256 != d {
			return am.Image{}, am.Errorf(am.BadArgs, "node %q: disk_image %q carries two different sha256 digests", clientID, location)
		}
		im.SHA256 = d
	}
	if im.SHA256 == "" && !r.cfg.AllowUnpinnedImages {
		return am.Image{}, am.Errorf(am.BadArgs, "node %q: disk_image %q has no sha256 digest: add geniam:sha256=\"<hex>\" (xmlns:geniam=%q), see docs/examples", clientID, location, am.GeniamNamespace)
	}
	return im, nil
}

// checkImageLocation accepts http(s) URLs, and absolute paths or file: URLs
// when the policy allows local images.
func (r *RSpecs) checkImageLocation(clientID, location string) error {
	u, err := url.Parse(location)
	if err == nil {
		switch strings.ToLower(u.Scheme) {
		case "http", "https":
			if u.Host != "" {
				return nil
			}
		case "file":
			if r.cfg.AllowLocalImages && strings.HasPrefix(u.Path, "/") {
				return nil
			}
		case "":
			if r.cfg.AllowLocalImages && strings.HasPrefix(location, "/") {
				return nil
			}
		}
	}
	return am.Errorf(am.BadArgs, "node %q: disk_image %q is not the http(s) URL of a docker save tar", clientID, location)
}

func isSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}
