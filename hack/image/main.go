// Command image builds the pgops operator image offline, with no container daemon and no
// registry: it compiles both operators as static binaries (or takes them from
// --binary-dir) and writes an archive that `docker load -i`, `podman load -i` and
// `kind load image-archive` accept. `make image-archive` runs it.
//
// It uses github.com/google/go-containerregistry (through internal/imagebuild) rather than
// hand-written tar and JSON: that well-kept library, the one ko and crane are built on,
// already gets image configs, diff IDs, digests and docker-load's manifest.json right.
//
//	go run ./hack/image [--out bin/pgops-image.tar] [--oci-layout DIR] [--ref IMAGE]
//
// Every timestamp is SOURCE_DATE_EPOCH (default 0), so the same sources give the same
// image digest.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"time"

	"github.com/pgops/pgops/internal/imagebuild"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		root      = flag.String("root", ".", "Root of the pgops module (holds go.mod and "+imagebuild.TagFile+").")
		ref       = flag.String("ref", "", "Image reference to tag the archive with; default "+imagebuild.Repository+":<"+imagebuild.TagFile+">.")
		out       = flag.String("out", "bin/pgops-image.tar", "Archive to write (docker-save format).")
		ociLayout = flag.String("oci-layout", "", "Also write an OCI image layout into this directory.")
		binDir    = flag.String("binary-dir", "", "Directory that already holds static provisioner and ops-manager binaries; default: build them.")
		goTool    = flag.String("go", envOr("GO", "go"), "Go command used to build the binaries.")
		goarch    = flag.String("arch", runtime.GOARCH, "Architecture (GOARCH) of the binaries and the image; the OS is linux.")
	)
	flag.Parse()
	if flag.NArg() != 0 {
		return fmt.Errorf("unexpected arguments %q", flag.Args())
	}

	created := time.Unix(0, 0)
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		sec, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return fmt.Errorf("SOURCE_DATE_EPOCH=%q: %w", s, err)
		}
		created = time.Unix(sec, 0)
	}
	if *ref == "" {
		r, err := imagebuild.Reference(*root)
		if err != nil {
			return err
		}
		*ref = r
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if *binDir == "" {
		tmp, err := os.MkdirTemp("", "pgops-image-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		if err := imagebuild.BuildBinaries(ctx, *goTool, *root, tmp, "linux", *goarch); err != nil {
			return err
		}
		*binDir = tmp
	}

	img, err := imagebuild.Build(imagebuild.Options{
		BinaryDir: *binDir,
		Ref:       *ref,
		OS:        "linux",
		Arch:      *goarch,
		Created:   created,
	})
	if err != nil {
		return err
	}
	if err := imagebuild.WriteArchive(*out, *ref, img); err != nil {
		return err
	}
	if *ociLayout != "" {
		if err := imagebuild.WriteLayout(*ociLayout, *ref, img); err != nil {
			return err
		}
	}
	digest, err := img.Digest()
	if err != nil {
		return err
	}
	fmt.Printf("wrote %s: %s (linux/%s) %s\n", *out, *ref, *goarch, digest)
	if *ociLayout != "" {
		fmt.Printf("wrote OCI layout %s\n", *ociLayout)
	}
	return nil
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
