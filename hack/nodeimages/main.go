// Command nodeimages builds, offline, the images the local node's container runtime runs
// besides the operator's: the PostgreSQL image, from a root file system of Debian's
// packages (hack/install-node-images.sh makes it with mmdebstrap), in the official image's
// layout; and the pod sandbox (pause) image, from hack/pause. Each is written as a
// docker-save archive that `ctr images import` accepts.
//
//	go run ./hack/nodeimages --postgres-rootfs rootfs.tar --postgres-ref REF --pause-ref REF --out-dir DIR
package main

import (
	"archive/tar"
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/pgops/pgops/internal/imagebuild"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "nodeimages:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		rootfs     = flag.String("postgres-rootfs", "", "Root file system of the PostgreSQL image, a tar (mmdebstrap's output).")
		pgRef      = flag.String("postgres-ref", "", "Reference of the PostgreSQL image.")
		pgMajor    = flag.String("postgres-major", "15", "Major version of PostgreSQL in the root file system (its binaries are in /usr/lib/postgresql/<major>/bin).")
		pauseRef   = flag.String("pause-ref", "", "Reference of the sandbox image.")
		outDir     = flag.String("out-dir", ".", "Directory to write postgres-<major>.tar and pause.tar into.")
		goTool     = flag.String("go", "go", "Go command that builds hack/pause.")
		moduleRoot = flag.String("root", ".", "Root of the pgops module.")
	)
	flag.Parse()
	created := time.Unix(0, 0).UTC()
	if *rootfs != "" {
		img, err := postgresImage(*rootfs, *pgMajor, created)
		if err != nil {
			return err
		}
		if err := imagebuild.WriteArchive(filepath.Join(*outDir, "postgres-"+*pgMajor+".tar"), *pgRef, img); err != nil {
			return fmt.Errorf("postgres image: %w", err)
		}
	}
	if *pauseRef != "" {
		img, err := pauseImage(context.Background(), *goTool, *moduleRoot, created)
		if err != nil {
			return err
		}
		if err := imagebuild.WriteArchive(filepath.Join(*outDir, "pause.tar"), *pauseRef, img); err != nil {
			return fmt.Errorf("pause image: %w", err)
		}
	}
	return nil
}

// postgresImage is the root file system as one layer, with the configuration of the
// official postgres image: the server binaries on PATH, PGDATA, SIGINT to stop.
func postgresImage(rootfs, major string, created time.Time) (v1.Image, error) {
	layer, err := tarball.LayerFromFile(rootfs)
	if err != nil {
		return nil, fmt.Errorf("postgres root file system: %w", err)
	}
	return image(layer, created, v1.Config{
		Env: []string{
			"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/usr/lib/postgresql/" + major + "/bin",
			"PGDATA=/var/lib/postgresql/data",
			"LANG=C.UTF-8",
		},
		Cmd:        []string{"postgres"},
		StopSignal: "SIGINT",
		WorkingDir: "/",
		Labels: map[string]string{
			"org.opencontainers.image.title":       "postgres",
			"org.opencontainers.image.description": "PostgreSQL " + major + " from Debian's packages, for pgops's local node",
		},
	}, "mmdebstrap: postgresql-"+major)
}

// pauseImage is hack/pause, built static, as /pause.
func pauseImage(ctx context.Context, goTool, root string, created time.Time) (v1.Image, error) {
	dir, err := os.MkdirTemp("", "pgops-pause-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "pause")
	cmd := exec.CommandContext(ctx, goTool, "build", "-trimpath", "-ldflags=-s -w", "-o", bin, "./hack/pause")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build ./hack/pause: %v: %s", err, out)
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "pause", Mode: 0o755, Size: int64(len(data)), ModTime: created}); err != nil {
		return nil, err
	}
	if _, err := tw.Write(data); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	layerTar := buf.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(layerTar)), nil })
	if err != nil {
		return nil, err
	}
	return image(layer, created, v1.Config{Entrypoint: []string{"/pause"}, User: "65535:65535", WorkingDir: "/"}, "hack/pause")
}

func image(layer v1.Layer, created time.Time, cfg v1.Config, createdBy string) (v1.Image, error) {
	img, err := mutate.ConfigFile(empty.Image, &v1.ConfigFile{
		Architecture: "amd64", OS: "linux",
		Created: v1.Time{Time: created},
		RootFS:  v1.RootFS{Type: "layers"},
		Config:  cfg,
	})
	if err != nil {
		return nil, err
	}
	img, err = mutate.Append(img, mutate.Addendum{Layer: layer, History: v1.History{Created: v1.Time{Time: created}, CreatedBy: createdBy}})
	if err != nil {
		return nil, err
	}
	return mutate.CreatedAt(img, v1.Time{Time: created})
}
