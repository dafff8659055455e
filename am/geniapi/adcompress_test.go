package geniapi

import (
	"strings"
	"testing"
)

// The compressed advertisement is computed once per distinct advertisement
// and always decompresses to the one asked for.
func TestCompressAdvertisementRemembersTheLast(t *testing.T) {
	a := "<rspec type=\"advertisement\">" + strings.Repeat("<node/>", 100) + "</rspec>"
	b := strings.Replace(a, "<node/>", "<node x=\"1\"/>", 1)
	for i, ad := range []string{a, a, b, a} {
		got, err := compressAdvertisement(ad)
		if err != nil {
			t.Fatal(err)
		}
		if decompress(t, got) != ad {
			t.Fatalf("call %d: decompressed to another advertisement", i)
		}
	}
	first, _ := compressAdvertisement(a)
	again, _ := compressAdvertisement(a)
	if first != again {
		t.Error("the same advertisement compressed differently")
	}
}

func BenchmarkCompressAdvertisement(b *testing.B) {
	ad := "<rspec type=\"advertisement\">" + strings.Repeat(`<node component_id="urn:publicid:IDN+geniam.localhost+node+bench0001"><sliver_type name="container"/></node>`+"\n", 1000) + "</rspec>"
	b.Run("remembered", func(b *testing.B) {
		for b.Loop() {
			if _, err := compressAdvertisement(ad); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("zlib", func(b *testing.B) {
		for b.Loop() {
			if _, err := maybeCompress(ad, true); err != nil {
				b.Fatal(err)
			}
		}
	})
}
