// Package debug is corrald's debug service (debug.proto): Info, a
// read-only Dump of the metadata store, and the stream of shim events,
// served over ttrpc on STATE/debug.sock and read by corralctl.
package debug
