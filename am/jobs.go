package am

// JobKind is the work a provisioner does on a node for one sliver change
// (the jobs table's kind column).
type JobKind string

const (
	JobProvision   JobKind = "provision"    // Provision: fetch the image and run it
	JobStart       JobKind = "start"        // geni_start
	JobStop        JobKind = "stop"         // geni_stop, Shutdown
	JobRestart     JobKind = "restart"      // geni_restart
	JobUpdateUsers JobKind = "update_users" // geni_update_users
	JobFetchData   JobKind = "fetch_data"   // geniam_fetch_data: archive /data
	JobDelete      JobKind = "delete"       // Delete or expiry of a provisioned sliver
)

// JobKinds lists every kind. The CHECK constraint on jobs.kind
// (migrations/0002_jobs.sql) must allow exactly these.
var JobKinds = []JobKind{JobProvision, JobStart, JobStop, JobRestart, JobUpdateUsers, JobFetchData, JobDelete}

// EventShutdown is the sliver event Shutdown writes (geniam.event).
const EventShutdown = "Shutdown"

// ActionJobs is the one table of which job an event on a provisioned sliver
// enqueues: each operational action, and Shutdown. The database writes the
// job in the same transaction as the change (the CASE of the trigger
// slivers_enqueue_jobs, migrations/0002_jobs.sql); store's
// TestActionJobTable holds that SQL, and the CHECK on jobs.kind, to this
// table. Provision and Delete are not events of a provisioned sliver: the
// trigger enqueues JobProvision on the change to geni_provisioned and
// JobDelete on the deletion of a provisioned sliver.
var ActionJobs = []struct {
	Event string
	Job   JobKind
}{
	{ActionStart, JobStart},
	{ActionStop, JobStop},
	{ActionRestart, JobRestart},
	{ActionUpdateUsers, JobUpdateUsers},
	{ActionFetchData, JobFetchData},
	{EventShutdown, JobStop},
}

// SupportedActions are the PerformOperationalAction actions we implement:
// the operational actions of ActionJobs.
var SupportedActions = func() []string {
	var out []string
	for _, aj := range ActionJobs {
		if aj.Event != EventShutdown {
			out = append(out, aj.Event)
		}
	}
	return out
}()
