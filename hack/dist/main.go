// Command dist writes dist/install.yaml, the single-file install, from manifests/ (see
// internal/dist). `make dist` runs it from the repository root:
//
//	go run ./hack/dist [--manifests manifests] [--out dist/install.yaml]
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/pgops/pgops/internal/dist"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "dist: %v\n", err)
		os.Exit(1)
	}
}

func run() error {
	manifests := flag.String("manifests", dist.ManifestsDir, "directory holding kustomization.yaml")
	out := flag.String("out", dist.OutputPath, "file to write")
	flag.Parse()
	data, err := dist.Render(*manifests)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(*out), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(*out, data, 0o644); err != nil {
		return err
	}
	fmt.Printf("wrote %s (%d bytes)\n", *out, len(data))
	return nil
}
