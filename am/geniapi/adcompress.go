package geniapi

import "sync"

// lastAd remembers the last advertisement ListResources compressed and its
// compressed form. The aggregate serves the same cached advertisement to
// every caller until the inventory or its usage changes, and zlib of a
// 1,000-node advertisement (about 370 kB) costs more than the rest of the
// call; comparing it with the last one costs microseconds.
var lastAd struct {
	sync.Mutex
	plain, compressed string
}

// compressAdvertisement is maybeCompress(ad, true), remembering the last
// result.
func compressAdvertisement(ad string) (string, error) {
	lastAd.Lock()
	if ad == lastAd.plain && lastAd.compressed != "" {
		out := lastAd.compressed
		lastAd.Unlock()
		return out, nil
	}
	lastAd.Unlock()
	out, err := maybeCompress(ad, true)
	if err != nil {
		return "", err
	}
	lastAd.Lock()
	lastAd.plain, lastAd.compressed = ad, out
	lastAd.Unlock()
	return out, nil
}
