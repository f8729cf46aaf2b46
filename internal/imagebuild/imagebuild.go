// Package imagebuild assembles the pgops operator image without a container daemon or a
// registry: one layer with both static binaries and a passwd entry for a non-root user,
// written as a docker-save style archive that `docker load`, `podman load` and
// `kind load image-archive` accept (and, optionally, as an OCI image layout).
//
// It uses github.com/google/go-containerregistry rather than hand-written tar/JSON: that
// library is what ko, crane and kaniko use, is well kept, and gets the details right that a
// home-made writer would have to rediscover (diff IDs versus digests, config and manifest
// media types, the RepoTags quirks `docker load` relies on, OCI layout indexes).
//
// hack/image (run by `make image-archive`) is the command; the package's test builds the
// image and checks it against the Deployments in manifests/operators.
package imagebuild

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

const (
	// Repository is where the operator image is published.
	Repository = "ghcr.io/pgops/pgops"
	// TagFile, relative to the repository root, holds the pinned tag the manifests use.
	TagFile = "hack/image-tag"
	// BinDir is where both binaries live in the image; the manifests' commands name it.
	BinDir = "/usr/local/bin"
	// DefaultSource is the org.opencontainers.image.source label.
	DefaultSource = "https://github.com/pgops/pgops"

	// UID and GID of the image's user, the same as distroless's "nonroot".
	UID      = 65532
	GID      = 65532
	UserName = "nonroot"
)

// Operators are the commands (under ./cmd) the manifests run from the image; the first is
// the entrypoint.
var Operators = []string{"provisioner", "ops-manager"}

// Agent is the command the database pods' init container copies out of the image
// (pkg/agent); nothing runs it in the image.
const Agent = "pgops-agent"

// Binaries are the commands the image carries.
var Binaries = append(slices.Clone(Operators), Agent)

// ReadTag returns the pinned tag from root/hack/image-tag.
func ReadTag(root string) (string, error) {
	b, err := os.ReadFile(filepath.Join(root, TagFile))
	if err != nil {
		return "", err
	}
	tag := strings.TrimSpace(string(b))
	if _, err := name.NewTag(Repository+":"+tag, name.StrictValidation); err != nil {
		return "", fmt.Errorf("%s: %w", TagFile, err)
	}
	return tag, nil
}

// Reference returns the image reference for the pinned tag under root.
func Reference(root string) (string, error) {
	tag, err := ReadTag(root)
	if err != nil {
		return "", err
	}
	return Repository + ":" + tag, nil
}

// BuildBinaries compiles the commands in Binaries from the module at root into outDir as
// static binaries for goos/goarch, with the same flags as the Dockerfile.
func BuildBinaries(ctx context.Context, goTool, root, outDir, goos, goarch string) error {
	return BuildCommands(ctx, goTool, root, outDir, goos, goarch, Binaries...)
}

// BuildCommands is BuildBinaries for the named commands under ./cmd.
func BuildCommands(ctx context.Context, goTool, root, outDir, goos, goarch string, commands ...string) error {
	if goTool == "" {
		goTool = "go"
	}
	absOut, err := filepath.Abs(outDir)
	if err != nil {
		return err
	}
	args := []string{"build", "-trimpath", "-buildvcs=false", "-ldflags=-s -w", "-o", absOut + string(filepath.Separator)}
	for _, b := range commands {
		args = append(args, "./cmd/"+b)
	}
	cmd := exec.CommandContext(ctx, goTool, args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+goos, "GOARCH="+goarch)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %w\n%s", goTool, strings.Join(args, " "), err, out.String())
	}
	return nil
}

// Options describe the image to assemble.
type Options struct {
	// BinaryDir holds one file per entry of Binaries.
	BinaryDir string
	// Ref is the image reference written into the archive, e.g. ghcr.io/pgops/pgops:v0.1.0.
	Ref string
	// OS and Arch of the binaries; Arch defaults to amd64, OS to linux.
	OS, Arch string
	// Created is used for every timestamp (config, history, file mtimes) so that the same
	// inputs always give the same image digest. The zero value means the Unix epoch.
	Created time.Time
	// Source is the org.opencontainers.image.source label; empty means DefaultSource.
	Source string
}

// Build assembles the image in memory (the binaries are read when the image is written).
func Build(o Options) (v1.Image, error) {
	if o.OS == "" {
		o.OS = "linux"
	}
	if o.Arch == "" {
		o.Arch = "amd64"
	}
	if o.Source == "" {
		o.Source = DefaultSource
	}
	created := o.Created.UTC().Truncate(time.Second)
	if o.Created.IsZero() {
		created = time.Unix(0, 0).UTC()
	}
	ref, err := name.NewTag(o.Ref, name.StrictValidation)
	if err != nil {
		return nil, fmt.Errorf("image reference %q: %w", o.Ref, err)
	}

	layerTar, err := rootFS(o.BinaryDir, created)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	})
	if err != nil {
		return nil, err
	}

	entrypoint := path.Join(BinDir, Binaries[0])
	cfg := &v1.ConfigFile{
		Architecture: o.Arch,
		OS:           o.OS,
		Created:      v1.Time{Time: created},
		RootFS:       v1.RootFS{Type: "layers"},
		Config: v1.Config{
			User:       fmt.Sprintf("%d:%d", UID, GID),
			Entrypoint: []string{entrypoint},
			WorkingDir: "/",
			Env:        []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
			Labels: map[string]string{
				"org.opencontainers.image.title":       "pgops",
				"org.opencontainers.image.description": "pgops operators: " + strings.Join(Binaries, " and "),
				"org.opencontainers.image.source":      o.Source,
				"org.opencontainers.image.version":     ref.TagStr(),
				"org.opencontainers.image.licenses":    "Apache-2.0",
			},
		},
	}
	img, err := mutate.ConfigFile(empty.Image, cfg)
	if err != nil {
		return nil, err
	}
	img, err = mutate.Append(img, mutate.Addendum{
		Layer: layer,
		History: v1.History{
			Created:   v1.Time{Time: created},
			CreatedBy: "pgops hack/image: " + strings.Join(Binaries, ", ") + " in " + BinDir,
			Comment:   "static binaries, /etc/passwd and /etc/group",
		},
	})
	if err != nil {
		return nil, err
	}
	return mutate.CreatedAt(img, v1.Time{Time: created})
}

// WriteArchive writes img as a docker-save style tarball tagged ref.
func WriteArchive(file, ref string, img v1.Image) error {
	tag, err := name.NewTag(ref, name.StrictValidation)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return err
	}
	// Write next to the target and rename, so an interrupted build leaves no half archive.
	tmp := file + ".tmp"
	if err := tarball.WriteToFile(tmp, tag, img); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, file)
}

// WriteLayout writes img into an OCI image layout directory (replacing any there), with
// the reference as its org.opencontainers.image.ref.name annotation.
func WriteLayout(dir, ref string, img v1.Image) error {
	tag, err := name.NewTag(ref, name.StrictValidation)
	if err != nil {
		return err
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	return p.AppendImage(img, layout.WithAnnotations(map[string]string{
		"org.opencontainers.image.ref.name": tag.TagStr(),
		"io.containerd.image.name":          tag.String(),
	}))
}

// rootFS returns the image's only layer as an uncompressed tar: the directories, a passwd
// and group file naming the non-root user, and the binaries, all owned by root except the
// user's home, with every mtime set to created.
func rootFS(binaryDir string, created time.Time) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	hdr := func(name string, typ byte, mode int64, size int64, uid, gid int) *tar.Header {
		uname, gname := "root", "root"
		if uid == UID {
			uname, gname = UserName, UserName
		}
		return &tar.Header{
			Typeflag: typ, Name: name, Mode: mode, Size: size,
			Uid: uid, Gid: gid, Uname: uname, Gname: gname,
			ModTime: created, Format: tar.FormatPAX,
		}
	}
	dir := func(name string, mode int64, uid, gid int) error {
		return tw.WriteHeader(hdr(name+"/", tar.TypeDir, mode, 0, uid, gid))
	}
	file := func(name string, mode int64, data []byte) error {
		if err := tw.WriteHeader(hdr(name, tar.TypeReg, mode, int64(len(data)), 0, 0)); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}

	passwd := fmt.Sprintf("root:x:0:0:root:/root:/sbin/nologin\n"+
		"nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n"+
		"%[1]s:x:%[2]d:%[3]d:%[1]s:/home/%[1]s:/sbin/nologin\n", UserName, UID, GID)
	group := fmt.Sprintf("root:x:0:\nnobody:x:65534:\n%s:x:%d:\n", UserName, GID)

	steps := []func() error{
		func() error { return dir("etc", 0o755, 0, 0) },
		func() error { return file("etc/passwd", 0o644, []byte(passwd)) },
		func() error { return file("etc/group", 0o644, []byte(group)) },
		// Go's resolver reads this; without it the order of /etc/hosts and DNS is a guess.
		func() error { return file("etc/nsswitch.conf", 0o644, []byte("hosts: files dns\n")) },
		func() error { return dir("home", 0o755, 0, 0) },
		func() error { return dir("home/"+UserName, 0o700, UID, GID) },
		func() error { return dir("tmp", 0o1777, 0, 0) },
		func() error { return dir("usr", 0o755, 0, 0) },
		func() error { return dir("usr/local", 0o755, 0, 0) },
		func() error { return dir(strings.TrimPrefix(BinDir, "/"), 0o755, 0, 0) },
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return nil, err
		}
	}
	for _, b := range Binaries {
		data, err := os.ReadFile(filepath.Join(binaryDir, b))
		if err != nil {
			return nil, fmt.Errorf("binary for the image: %w", err)
		}
		if len(data) == 0 {
			return nil, errors.New("binary for the image is empty: " + b)
		}
		if err := file(path.Join(strings.TrimPrefix(BinDir, "/"), b), 0o755, data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
