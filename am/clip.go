package am

// Clip cuts s to n bytes and marks the cut with "...": user input quoted in
// an error message or a log line stays bounded whatever the caller sent.
func Clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
