package agent

// LoginTarget is what an SSH login to a sliver reaches: its container and
// the users whose keys may log in, as the node's Service knows them now (a
// geni_update_users takes effect at the next check). It lives here, not
// with the Service, so that package sshlogin needs only this package.
type LoginTarget struct {
	SliverID    string
	SliceURN    string
	SliverURN   string
	ContainerID string
	Users       []User
}
