package am

import (
	"context"
	"fmt"
	"path"
	"strings"
	"sync"
	"time"
)

// OpsPolicy is what operators add to the AM API semantics: who may use the
// aggregate at all (allow/deny URN patterns), how many live slivers a user or
// a project may hold, and a maintenance switch that refuses new Allocates
// while everything else keeps working. The zero value allows everything.
type OpsPolicy struct {
	// Allow and Deny are glob patterns (path.Match syntax: * ? [...]) matched
	// against the effective user URN, the caller (tool) URN and their
	// authorities ("ch.geni.net", "ch.geni.net:myproj"). Deny wins; with a
	// non-empty Allow a call is served only when something matches it.
	Allow []string
	Deny  []string

	// MaxSliversPerUser / MaxSliversPerProject bound the live slivers (any
	// state) a user has allocated / a project's slices hold, counting the
	// new ones; 0 means no limit. UserLimits and ProjectLimits override the
	// default for one user URN / project ("authority:project").
	MaxSliversPerUser    int
	MaxSliversPerProject int
	UserLimits           map[string]int
	ProjectLimits        map[string]int

	// Maintenance, when not empty, refuses new Allocates with this message.
	Maintenance string
	// MaintenanceFrom reads the runtime switch shared by all processes (the
	// settings table); its answer wins over Maintenance when it is not
	// empty. Errors leave the static setting in force.
	MaintenanceFrom func(ctx context.Context) (string, error)

	// Counter counts live slivers for the limits (the Store implements it).
	Counter SliverCounter

	maintMu   sync.Mutex
	maintAt   time.Time
	maintSeen string
}

// SliverCounter counts live slivers allocated by user and held by slices of
// project (an authority with a subauthority, e.g. "ch.geni.net:myproj").
type SliverCounter interface {
	LiveSlivers(ctx context.Context, user, project string) (byUser, byProject int, err error)
}

// ProjectOf returns the project of a slice URN: its authority when that has a
// subauthority ("ch.geni.net:myproj"), else "" (no project limit applies).
func ProjectOf(sliceURN string) string {
	u, err := ParseURN(sliceURN)
	if err != nil || !strings.Contains(u.Authority, ":") {
		return ""
	}
	return u.Authority
}

// checkAccess applies Allow and Deny to an authorized call.
func (p *OpsPolicy) checkAccess(authz *Authorization) error {
	if p == nil || (len(p.Allow) == 0 && len(p.Deny) == 0) {
		return nil
	}
	subjects := []string{authz.User}
	if authz.Tool != "" {
		subjects = append(subjects, authz.Tool)
	}
	var names []string
	for _, s := range subjects {
		names = append(names, s)
		if u, err := ParseURN(s); err == nil {
			auth := u.Authority
			names = append(names, auth)
			if i := strings.IndexByte(auth, ':'); i > 0 {
				names = append(names, auth[:i])
			}
		}
	}
	for _, pat := range p.Deny {
		for _, n := range names {
			if globMatch(pat, n) {
				return Errorf(Forbidden, "%s is denied at this aggregate (operator policy: deny %q)", authz.User, pat)
			}
		}
	}
	if len(p.Allow) == 0 {
		return nil
	}
	for _, pat := range p.Allow {
		for _, n := range names {
			if globMatch(pat, n) {
				return nil
			}
		}
	}
	return Errorf(Forbidden, "%s is not on this aggregate's allow list (operator policy); ask the operator for access", authz.User)
}

// globMatch is path.Match that treats "/" like any other character (URNs
// have none, but a bad pattern must not match everything).
func globMatch(pattern, name string) bool {
	ok, err := path.Match(pattern, name)
	return err == nil && ok
}

// maintenanceCacheFor is how long one process trusts its last read of the
// runtime maintenance switch.
const maintenanceCacheFor = time.Second

// maintenance returns the message refusing Allocates, "" when open.
func (p *OpsPolicy) maintenance(ctx context.Context, now time.Time) string {
	if p == nil {
		return ""
	}
	msg := p.Maintenance
	if p.MaintenanceFrom == nil {
		return msg
	}
	p.maintMu.Lock()
	if age := now.Sub(p.maintAt); !p.maintAt.IsZero() && age >= 0 && age < maintenanceCacheFor {
		seen := p.maintSeen
		p.maintMu.Unlock()
		return firstNonEmpty(seen, msg)
	}
	p.maintMu.Unlock()
	seen, err := p.MaintenanceFrom(ctx)
	if err != nil {
		return msg
	}
	p.maintMu.Lock()
	p.maintAt, p.maintSeen = now, seen
	p.maintMu.Unlock()
	return firstNonEmpty(seen, msg)
}

func firstNonEmpty(xs ...string) string {
	for _, x := range xs {
		if x != "" {
			return x
		}
	}
	return ""
}

// checkLimits applies the sliver limits to an Allocate of n new slivers by
// authz.User on sliceURN. The limits are checked before the allocation's
// transaction: two concurrent Allocates of one user may both pass and
// overshoot by one request (the limits are fair-use bounds, not capacity;
// capacity is enforced by the database).
func (p *OpsPolicy) checkLimits(ctx context.Context, authz *Authorization, sliceURN string, n int) error {
	if p == nil {
		return nil
	}
	userMax := p.MaxSliversPerUser
	if v, ok := p.UserLimits[authz.User]; ok {
		userMax = v
	}
	project := ProjectOf(sliceURN)
	projectMax := 0
	if project != "" {
		projectMax = p.MaxSliversPerProject
		if v, ok := p.ProjectLimits[project]; ok {
			projectMax = v
		}
	}
	if (userMax <= 0 && projectMax <= 0) || p.Counter == nil {
		return nil
	}
	byUser, byProject, err := p.Counter.LiveSlivers(ctx, authz.User, project)
	if err != nil {
		return err
	}
	if userMax > 0 && byUser+n > userMax {
		return Errorf(Refused, "user limit: %s holds %d live slivers here and asks for %d more; the limit per user is %d (delete slivers or ask the operator)",
			authz.User, byUser, n, userMax)
	}
	if projectMax > 0 && byProject+n > projectMax {
		return Errorf(Refused, "project limit: project %s holds %d live slivers here and asks for %d more; the limit per project is %d",
			project, byProject, n, projectMax)
	}
	return nil
}

// String summarises the policy for the start-up log.
func (p *OpsPolicy) String() string {
	if p == nil {
		return "none"
	}
	return fmt.Sprintf("allow=%d deny=%d max_per_user=%d max_per_project=%d maintenance=%t",
		len(p.Allow), len(p.Deny), p.MaxSliversPerUser, p.MaxSliversPerProject, p.Maintenance != "")
}
