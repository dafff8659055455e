// Package agent is what both sides of the node agent share, split the way
// Nomad splits its drivers: the wire protocol (the JSON bodies of the v2 API
// and their validation, the AERPAW v1 compatibility types, the error body),
// the Client the aggregate drives agents with, the client side of their
// mutual TLS, and the Runtime interface with its optional verbs, which the
// container engines (agent/docker, agent/memruntime) and the experiment
// network (agent/expnet) implement. The node's side, the Service and its HTTP
// server, is package agent/node; the aggregate links only this package.
package agent

import (
	"regexp"

	"github.com/geniam/geniam/am"
)

// Labels put on every container the agent creates. Cleanup and reconciliation
// only ever touch containers that carry LabelManagedBy=ManagedByValue and this
// agent's LabelInstance.
const (
	LabelManagedBy = "org.geniam.managed-by"
	ManagedByValue = "geniam agent"
	LabelInstance  = "org.geniam.agent-instance"
	LabelSliver    = "org.geniam.sliver"
	LabelSliverURN = "org.geniam.sliver-urn"
	LabelSliceURN  = "org.geniam.slice-urn"
	// LabelAggregate names the aggregate (its instance) a container was
	// started for: two aggregates sharing an agent or an engine list only
	// their own (GET /v2/slivers?aggregate=NAME).
	LabelAggregate = "org.geniam.aggregate-instance"
)

// ContainerPrefix starts the engine name of every sliver container
// ("geniam-<sliver id>"), so `docker ps` shows which sliver a container is.
const ContainerPrefix = "geniam-"

// sliverIDPattern is what a sliver id may look like. It is also a valid
// Docker container name and a safe single path element: no "/", no "..",
// no shell metacharacters, no spaces.
var sliverIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

// ValidID checks a sliver id and returns a BADARGS error naming the problem.
func ValidID(id string) error {
	if !sliverIDPattern.MatchString(id) {
		return am.Errorf(am.BadArgs, "invalid sliver id %q: want 1-128 of [A-Za-z0-9_.-], starting with a letter or digit", am.Clip(id, 80))
	}
	return nil
}
