package schemas

import (
	"strings"
	"testing"
)

func TestEmbedded(t *testing.T) {
	b, err := FS.ReadFile(GeniamRSpecExt)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `targetNamespace="http://geniam.github.io/rspec/ext/geniam/1"`) {
		t.Fatal("extension schema does not target the geniam namespace")
	}
}
