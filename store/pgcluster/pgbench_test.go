package pgcluster

import "testing"

func TestParseTPS(t *testing.T) {
	out := "pgbench (15.10)\nnumber of transactions actually processed: 7418\nlatency average = 10.8 ms\n" +
		"initial connection time = 9.1 ms\ntps = 741.812345 (without initial connection time)\n"
	if tps, err := parseTPS(out); err != nil || tps != 741.812345 {
		t.Errorf("parseTPS = %v, %v", tps, err)
	}
	if _, err := parseTPS("connection refused"); err == nil {
		t.Error("parseTPS without a tps line succeeded")
	}
}
