package server

import (
	"testing"

	"github.com/corral-runtime/corral/shim"
)

// corrald names the shim's annotation without linking the shim package.
func TestStartOnCreateAnnotation(t *testing.T) {
	if annotationStartOnCreate != shim.StartOnCreateAnnotation {
		t.Errorf("corrald sets %q, the shim reads %q", annotationStartOnCreate, shim.StartOnCreateAnnotation)
	}
}

func TestCreateAtStartAnnotation(t *testing.T) {
	if annotationCreateAtStart != shim.CreateAtStartAnnotation {
		t.Errorf("corrald sets %q, the shim reads %q", annotationCreateAtStart, shim.CreateAtStartAnnotation)
	}
}
