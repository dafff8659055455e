package credentials

// CacheStats counts how verified credentials were found: hits were answered
// from the cache, misses verified (signatures, chains) from scratch.
type CacheStats struct {
	Hits, Misses uint64
	Entries      int
}

// CacheStats returns the counters since the Verifier was made (for metrics).
func (v *Verifier) CacheStats() CacheStats {
	v.mu.Lock()
	n := len(v.cache)
	v.mu.Unlock()
	return CacheStats{Hits: v.cacheHits.Load(), Misses: v.cacheMisses.Load(), Entries: n}
}
