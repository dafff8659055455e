package geniclient

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
)

// DownloadError is a refused download: the HTTP status and, when the
// aggregate sent its JSON error ({"error", "code", "geni_code"}), the code.
type DownloadError struct {
	URL     string
	Status  string
	Code    int // geni_code, -1 when the body had none
	Message string
}

func (e *DownloadError) Error() string {
	if e.Code >= 0 {
		return fmt.Sprintf("%s: %s (geni_code %d): %s", e.URL, CodeLabel(e.Code), e.Code, e.Message)
	}
	return fmt.Sprintf("%s: HTTP %s: %s", e.URL, e.Status, e.Message)
}

// LogID is the log id quoted in the error, or "".
func (e *DownloadError) LogID() string {
	if m := logIDPattern.FindStringSubmatch(e.Message); m != nil {
		return m[1]
	}
	return ""
}

// Download POSTs the slice credential (as omni saves it) to url, the way an
// aggregate serves sliver data (geniam: /data/<sliver>.tar), and writes the
// answer to file. The body goes to a temporary file renamed into place only
// when the whole answer arrived, so a cut transfer never leaves a file that
// looks complete. It returns the bytes written and the source the aggregate
// named (X-Geniam-Data-Source), if any.
func Download(ctx context.Context, client *http.Client, url string, cred Credential, file string) (int64, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(cred.MarshalOmni()))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		e := &DownloadError{URL: url, Status: resp.Status, Code: -1, Message: string(bytes.TrimSpace(body))}
		var j struct {
			Error    string `json:"error"`
			GENICode *int   `json:"geni_code"`
		}
		if json.Unmarshal(body, &j) == nil && j.Error != "" {
			e.Message = j.Error
			if j.GENICode != nil {
				e.Code = *j.GENICode
			}
		}
		return 0, "", e
	}
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return 0, "", err
	}
	tmp, err := os.CreateTemp(filepath.Dir(file), "."+filepath.Base(file)+".part-*")
	if err != nil {
		return 0, "", err
	}
	defer os.Remove(tmp.Name())
	n, err := io.Copy(tmp, resp.Body)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil && resp.ContentLength >= 0 && n != resp.ContentLength {
		err = fmt.Errorf("got %d of %d bytes", n, resp.ContentLength)
	}
	if err != nil {
		return n, "", fmt.Errorf("%s: the download was cut after %d bytes (nothing written): %w", url, n, err)
	}
	if err := os.Rename(tmp.Name(), file); err != nil {
		return n, "", err
	}
	return n, resp.Header.Get("X-Geniam-Data-Source"), nil
}
