package agent

import (
	"os"
	"testing"
)

// An aggregate sees its own slivers and those started without an
// instance, never another aggregate's.
func TestOfAggregate(t *testing.T) {
	sts := []Status{{ID: "a", Aggregate: "am-1"}, {ID: "b", Aggregate: "am-2"}, {ID: "c"}}
	ids := func(sts []Status) (s string) {
		for _, st := range sts {
			s += st.ID
		}
		return s
	}
	for inst, want := range map[string]string{"am-1": "ac", "am-2": "bc", "am-3": "c", "": "abc"} {
		if got := ids(OfAggregate(sts, inst)); got != want {
			t.Errorf("instance %q sees %q, want %q", inst, got, want)
		}
	}
	r := &record{Aggregate: "am-1"}
	setAggregate(r, "")
	if r.Aggregate != "am-1" {
		t.Errorf("a request without an instance changed the record's to %q", r.Aggregate)
	}
}

func TestDiskOf(t *testing.T) {
	d, err := diskOf(os.TempDir())
	if err != nil || d.TotalBytes <= 0 || d.FreeBytes < 0 || d.FreeBytes > d.TotalBytes {
		t.Errorf("diskOf: %+v %v", d, err)
	}
}
