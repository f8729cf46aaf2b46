// Package apitest checks properties every pgops API type must have: deep copies are equal
// and independent, and JSON survives a round trip.
package apitest

import (
	"encoding/json"
	"reflect"
	"testing"

	apiequality "k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/randfill"
)

// DeepCopyIsIndependent fills obj with random data many times and checks that DeepCopyObject
// gives an equal value that shares no memory a caller could mutate.
func DeepCopyIsIndependent(t *testing.T, newObj func() runtime.Object) {
	t.Helper()
	filler := randfill.NewWithSeed(1).NilChance(0.2).NumElements(1, 3).Funcs(
		// RawExtension holds JSON; random bytes are not JSON and are not copied as such.
		func(r *runtime.RawExtension, c randfill.Continue) {
			r.Raw = []byte(`{"k":"` + c.String(8) + `"}`)
		},
	)
	for i := 0; i < 200; i++ {
		original := newObj()
		filler.Fill(original)
		copied := original.DeepCopyObject()
		if !apiequality.Semantic.DeepEqual(original, copied) {
			t.Fatalf("deep copy differs from original:\n%#v\n%#v", original, copied)
		}
		// Re-filling the copy must leave the original unchanged.
		snapshot := original.DeepCopyObject()
		filler.Fill(copied)
		if !reflect.DeepEqual(original, snapshot) {
			t.Fatalf("mutating the deep copy changed the original")
		}
	}
}

// JSONRoundTrip marshals obj, unmarshals into a fresh value and checks both are equal.
func JSONRoundTrip(t *testing.T, obj runtime.Object, newObj func() runtime.Object) {
	t.Helper()
	data, err := json.Marshal(obj)
	if err != nil {
		t.Fatalf("marshal: %v", err)
	}
	decoded := newObj()
	if err := json.Unmarshal(data, decoded); err != nil {
		t.Fatalf("unmarshal: %v", err)
	}
	if !apiequality.Semantic.DeepEqual(obj, decoded) {
		again, _ := json.Marshal(decoded)
		t.Fatalf("JSON round trip changed the object:\n%s\n%s", data, again)
	}
}
