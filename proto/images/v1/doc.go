// Package images is the generated code of corral.images.v1 (images.proto):
// corrald's ttrpc service for importing images from archives and exporting
// them, which corralctl images import|export calls.
package images
