package config

import (
	"os"
	"reflect"
	"strings"
	"testing"
)

// TestReadmeDocumentsEveryKey keeps README.md's configuration table in step
// with Config: a key added without a row there fails here.
func TestReadmeDocumentsEveryKey(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(readme)
	var walk func(reflect.Type, string)
	walk = func(typ reflect.Type, table string) {
		for i := range typ.NumField() {
			f := typ.Field(i)
			key, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
			switch {
			case f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeFor[Duration]():
				walk(f.Type, "["+key+"] ")
			case key == "runtimes":
				walk(reflect.TypeFor[Runtime](), "[runtimes.NAME] ")
			default:
				if row := "| `" + table + key + "` |"; !strings.Contains(doc, row) {
					t.Errorf("README.md has no row %s", row)
				}
			}
		}
	}
	walk(reflect.TypeFor[Config](), "")
}
