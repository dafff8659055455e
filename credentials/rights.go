package credentials

import (
	"strings"

	"github.com/geniam/geniam/am"
)

// Privileges and the operations they allow, as gcf defines them
// (credentials.md §6, gcf sfa/trust/rights.py). An AM method needs one or more
// operations (PrivilegesFor); a credential grants privileges; a privilege
// allows operations.

// privilegeOperations is gcf's privilege_table. "*" among the operations of
// "authority" means every operation.
var privilegeOperations = map[string][]string{
	"authority": {"register", "remove", "update", "resolve", "list", "getcredential", "*"},
	"refresh":   {"remove", "update"},
	"resolve":   {"resolve", "list", "getcredential"},
	"sa": {"getticket", "redeemslice", "redeemticket", "createslice", "createsliver", "deleteslice", "deletesliver",
		"updateslice", "getsliceresources", "loanresources", "stopslice", "startslice", "renewsliver",
		"resetslice", "listslices", "listnodes", "getpolicy", "sliverstatus"},
	"embed": {"getticket", "redeemslice", "redeemticket", "createslice", "createsliver", "renewsliver", "deleteslice",
		"deletesliver", "updateslice", "sliverstatus", "getsliceresources", "shutdown"},
	"bind": {"getticket", "loanresources", "redeemticket"},
	"control": {"updateslice", "createslice", "createsliver", "renewsliver", "sliverstatus", "stopslice", "startslice",
		"deleteslice", "deletesliver", "resetslice", "getsliceresources", "getgids"},
	"info":     {"listslices", "listnodes", "getpolicy"},
	"ma":       {"setbootstate", "getbootstate", "reboot", "getgids", "gettrustedcerts"},
	"operator": {"gettrustedcerts", "getgids"},
	"*":        {"createsliver", "deletesliver", "sliverstatus", "renewsliver", "shutdown"},
}

// methodOperations is what gcf's AM v3 checks per method (am-api-v3.md §11).
var methodOperations = map[string][]string{
	"ListResources":            nil,
	"Allocate":                 {"createsliver"},
	"Provision":                {"createsliver"},
	"PerformOperationalAction": {"createsliver"},
	"Renew":                    {"renewsliver"},
	"Status":                   {"getsliceresources"},
	"Describe":                 {"getsliceresources"},
	"Delete":                   {"deleteslice"},
	"Shutdown":                 {"shutdown"},
}

// PrivilegesFor returns the gcf operation names an AM API v3 method needs
// (the AuthRequest.Privileges to ask for): e.g. Allocate needs
// "createsliver". ListResources and GetVersion need none; an unknown method
// returns nil as well.
func PrivilegesFor(method string) []string {
	ops := methodOperations[method]
	return append([]string(nil), ops...)
}

// defaultRights is what a "*" privilege expands to, by target type
// (gcf rights.determine_rights); the type is the URN type, with
// "authority+<name>" for authorities.
func defaultRights(targetType string) []string {
	switch strings.ToLower(targetType) {
	case "user":
		return []string{"refresh", "resolve", "info"}
	case "slice":
		return []string{"refresh", "embed", "bind", "control", "info"}
	case "sa", "authority+sa":
		return []string{"authority", "sa"}
	case "ma", "authority+ma", "cm", "authority+cm", "sm", "authority+sm":
		return []string{"authority", "ma"}
	case "authority":
		return []string{"authority", "sa", "ma"}
	case "component":
		return []string{"operator"}
	}
	return nil
}

// targetTypeOf is the type defaultRights expects for a target URN.
func targetTypeOf(urn string) string {
	u, err := am.ParseURN(urn)
	if err != nil {
		return ""
	}
	if strings.EqualFold(u.Type, "authority") {
		return "authority+" + u.Name
	}
	return u.Type
}

// allows reports whether privilege name allows operation op.
func allows(name, op string) bool {
	for _, o := range privilegeOperations[strings.ToLower(name)] {
		if o == "*" || o == op {
			return true
		}
	}
	return false
}

// grants reports whether the privileges allow op.
func grants(privs []Privilege, op string) bool {
	op = strings.ToLower(op)
	for _, p := range privs {
		if allows(p.Name, op) {
			return true
		}
	}
	return false
}

// delegatableFrom reports whether a child privilege may have been delegated
// from parent (gcf Right.is_superset, with the can_delegate bit required): the
// parent privilege must be delegatable and allow every operation the child's
// allows (or all operations).
func delegatableFrom(child, parent Privilege) bool {
	if !parent.CanDelegate {
		return false
	}
	if strings.EqualFold(child.Name, parent.Name) {
		return true
	}
	parentOps := privilegeOperations[strings.ToLower(parent.Name)]
	childOps := privilegeOperations[strings.ToLower(child.Name)]
	if parentOps == nil || childOps == nil {
		return false
	}
	for _, o := range parentOps {
		if o == "*" {
			return true
		}
	}
	for _, c := range childOps {
		found := false
		for _, o := range parentOps {
			if o == c {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}
