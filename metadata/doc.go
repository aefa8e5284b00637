// Package metadata is corrald's record of truth: every sandbox, container and
// image it knows, kept in one bbolt file (ROOT/meta.db). Nothing else opens
// that file; a second daemon pointed at the same root fails to open it within
// Options.Timeout instead of waiting forever or sharing it.
//
// Bucket layout:
//
//	meta/
//	    schema_version     decimal ASCII, e.g. "1"
//	v1/
//	    sandboxes/         <sandbox ID>   -> JSON Sandbox
//	    sandbox_names/     <name key>     -> sandbox ID
//	    containers/        <container ID> -> JSON Container
//	    container_names/   <name key>     -> container ID
//	    images/            <image ID>     -> JSON Image
//
// The version lives outside v1/ so that a future layout (a v2/ tree built by
// a migration) does not have to move the one key every binary reads first.
//
// The *_names buckets are uniqueness indexes written in the same transaction
// as the record they point to: a sandbox's (name, namespace, uid, attempt)
// and a container's (sandbox ID, name, attempt) can be taken by one record
// only, so two racing RunPodSandbox or CreateContainer calls cannot both
// succeed. Their keys are length-prefixed strings followed by the attempt as
// four big-endian bytes; a container key starts with its sandbox's
// length-prefixed ID, which is how a sandbox finds its containers.
//
// Records are JSON: readable with any bbolt browser, and a field this binary
// does not know is ignored on read. Times are stored as Unix nanoseconds, the
// unit CRI reports, so they survive a round trip exactly; zero means unset.
// The CRI configs are kept as the protobuf bytes the kubelet sent, so this
// package needs no Kubernetes import and never loses a field of a newer CRI.
//
// Versioning rule: SchemaVersion is bumped, with a migration from the
// previous version, whenever a change would make an older corrald misread
// the file or silently drop something on rewrite (an Update by an older
// binary drops fields it does not know). Open runs the missing migrations in
// order, in one transaction with the version bump, so a crash leaves the file
// at the old version or the new one, never between. A file written by a newer
// schema is refused, untouched.
//
// A damaged file is refused, never replaced: before bbolt maps the file,
// Open walks its page tree in a plain copy of the bytes (bbolt trusts its
// file, and a cycle, a page past the end or a garbage freelist count would
// hang, fault or exhaust memory inside it), then runs bbolt's own
// consistency check. A file that fails either, or is empty, or records a
// version but lost its tree, gets errdefs.ErrDataLoss with the path and
// what to do, and is left untouched. Starting empty would make corrald
// forget the pods still running on the node.
//
// Every mutating call is one bbolt transaction, committed and fsynced before
// it returns. bbolt serialises writers itself and transactions here are
// short, so the store needs no lock of its own; callers that must hold a
// record still across several steps (a CRI call talking to a shim) use Locks,
// one lock per ID, so a slow pod never stalls another.
package metadata
