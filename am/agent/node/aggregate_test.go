package node

import (
	"os"
	"testing"
)

// A request without an aggregate instance keeps the record's.
func TestSetAggregateKeeps(t *testing.T) {
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
