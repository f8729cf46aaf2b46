package pgtest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFindBinDirMissing(t *testing.T) {
	empty := t.TempDir()
	t.Setenv("PG_BINDIR", empty)
	_, err := findBinDir()
	if err == nil || !strings.Contains(err.Error(), "apt-get install postgresql") {
		t.Fatalf("PG_BINDIR without binaries: got %v, want an error with install instructions", err)
	}

	t.Setenv("PG_BINDIR", "")
	t.Setenv("PATH", empty) // no pg_config
	old := versionedBinGlob
	versionedBinGlob = filepath.Join(empty, "*", "bin")
	defer func() { versionedBinGlob = old }()
	_, err = findBinDir()
	if err == nil || !strings.Contains(err.Error(), "apt-get install postgresql") {
		t.Fatalf("no binaries anywhere: got %v, want an error with install instructions", err)
	}
}

func TestFindBinDirPicksHighestVersion(t *testing.T) {
	root := t.TempDir()
	for _, v := range []string{"9.6", "13", "16", "notaversion"} {
		dir := filepath.Join(root, v, "bin")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, b := range []string{"initdb", "pg_ctl", "postgres"} {
			if err := os.WriteFile(filepath.Join(dir, b), []byte("#!/bin/sh\n"), 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Setenv("PG_BINDIR", "")
	t.Setenv("PATH", root)
	old := versionedBinGlob
	versionedBinGlob = filepath.Join(root, "*", "bin")
	defer func() { versionedBinGlob = old }()
	got, err := findBinDir()
	if err != nil || got != filepath.Join(root, "16", "bin") {
		t.Fatalf("findBinDir = %q, %v; want the 16 directory", got, err)
	}
	t.Setenv("PG_BINDIR", filepath.Join(root, "13", "bin"))
	if got, _ := findBinDir(); got != filepath.Join(root, "13", "bin") {
		t.Fatalf("PG_BINDIR not honoured: %q", got)
	}
}
