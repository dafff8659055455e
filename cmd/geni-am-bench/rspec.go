package main

import (
	_ "embed"
	"errors"
	"fmt"
	"os"

	"github.com/beevik/etree"
)

//go:embed request-one-container.xml
var defaultRequest string

// maxRequestBytes bounds a request RSpec file.
const maxRequestBytes = 4 << 20

func readRequest(name string) (string, error) {
	if name == "" {
		return defaultRequest, nil
	}
	info, err := os.Stat(name)
	if err != nil {
		return "", err
	}
	if info.Size() > maxRequestBytes {
		return "", fmt.Errorf("%s: %d bytes is too large for a request RSpec", name, info.Size())
	}
	b, err := os.ReadFile(name)
	if err != nil {
		return "", err
	}
	return string(b), nil
}

// maxSlivers bounds --provision-slivers.
const maxSlivers = 1000

// replicateNodes returns the request with its node elements repeated until
// there are n of them, each copy with a distinct client_id ("<id>-2", ...).
// A request that already has n or more nodes is returned as it is, so a
// hand-written request of any size is used unchanged.
func replicateNodes(request string, n int) (string, error) {
	if n < 1 || n > maxSlivers {
		return "", fmt.Errorf("sliver count %d is out of range 1..%d", n, maxSlivers)
	}
	doc := etree.NewDocument()
	doc.ReadSettings.Permissive = false
	if err := doc.ReadFromString(request); err != nil {
		return "", fmt.Errorf("request RSpec: %w", err)
	}
	root := doc.Root()
	if root == nil || root.Tag != "rspec" {
		return "", errors.New("request RSpec: the document element is not <rspec>")
	}
	nodes := root.SelectElements("node")
	if len(nodes) == 0 {
		return "", errors.New("request RSpec: no <node> to replicate")
	}
	if len(nodes) >= n {
		return request, nil
	}
	for i := len(nodes); i < n; i++ {
		orig := nodes[i%len(nodes)]
		c := orig.Copy()
		id := c.SelectAttrValue("client_id", "node")
		c.CreateAttr("client_id", fmt.Sprintf("%s-%d", id, i+1))
		// Links name their ends by client_id; copies have none, so only
		// nodes are copied, and a copy drops any interface it had.
		for _, iface := range c.SelectElements("interface") {
			c.RemoveChild(iface)
		}
		root.InsertChildAt(nodes[len(nodes)-1].Index()+i-len(nodes)+1, c)
	}
	s, err := doc.WriteToString()
	if err != nil {
		return "", err
	}
	return s, nil
}
