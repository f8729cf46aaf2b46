package imagebuild_test

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/yaml"

	"github.com/pgops/pgops/internal/imagebuild"
	"github.com/pgops/pgops/pkg/controller/provisioner"
)

// root is the module root, seen from this package's directory.
const root = "../.."

// TestImageMatchesManifests builds the image exactly as `make image-archive` does, reads
// the archive back the way `docker load` would and checks it against the Deployments the
// manifests apply: the pinned tag, every command they run, and a user that satisfies
// runAsNonRoot.
func TestImageMatchesManifests(t *testing.T) {
	if testing.Short() {
		// Building both operators with -trimpath and CGO_ENABLED=0 shares little with the
		// test build cache: a cold build takes minutes.
		t.Skip("builds both operators; skipped with -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	ref, err := imagebuild.Reference(root)
	if err != nil {
		t.Fatal(err)
	}
	bins := t.TempDir()
	goTool := os.Getenv("GO")
	if err := imagebuild.BuildBinaries(ctx, goTool, root, bins, "linux", runtime.GOARCH); err != nil {
		t.Fatal(err)
	}
	img, err := imagebuild.Build(imagebuild.Options{BinaryDir: bins, Ref: ref, Arch: runtime.GOARCH})
	if err != nil {
		t.Fatal(err)
	}
	archive := filepath.Join(t.TempDir(), "pgops-image.tar")
	if err := imagebuild.WriteArchive(archive, ref, img); err != nil {
		t.Fatal(err)
	}

	// manifest.json is what docker load and kind load image-archive read the tag from.
	raw := archiveMember(t, archive, "manifest.json")
	var manifest []struct{ RepoTags []string }
	if err := json.Unmarshal(raw, &manifest); err != nil {
		t.Fatalf("manifest.json: %v", err)
	}
	if len(manifest) != 1 || !slices.Equal(manifest[0].RepoTags, []string{ref}) {
		t.Fatalf("manifest.json = %s, want one image tagged %s", raw, ref)
	}

	tag, err := name.NewTag(ref)
	if err != nil {
		t.Fatal(err)
	}
	loaded, err := tarball.ImageFromPath(archive, &tag)
	if err != nil {
		t.Fatalf("reading the archive back: %v", err)
	}
	cfg, err := loaded.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.OS != "linux" || cfg.Architecture != runtime.GOARCH {
		t.Errorf("platform %s/%s, want linux/%s", cfg.OS, cfg.Architecture, runtime.GOARCH)
	}
	if got := cfg.Config.Labels["org.opencontainers.image.version"]; got != tag.TagStr() {
		t.Errorf("version label %q, want %q", got, tag.TagStr())
	}
	if cfg.Config.Labels["org.opencontainers.image.source"] == "" || cfg.Config.Labels["org.opencontainers.image.title"] == "" {
		t.Errorf("missing OCI labels: %v", cfg.Config.Labels)
	}
	fsys := extract(t, loaded)

	// A numeric non-root user, so the kubelet can enforce runAsNonRoot without runAsUser,
	// and one that /etc/passwd names.
	uid, gid := numericUser(t, cfg.Config.User)
	if uid == 0 {
		t.Fatalf("image user %q is root", cfg.Config.User)
	}
	if !passwdHas(fsys["etc/passwd"], uid, gid) {
		t.Errorf("/etc/passwd has no entry for %d:%d:\n%s", uid, gid, fsys["etc/passwd"].data)
	}
	if !groupHas(fsys["etc/group"], gid) {
		t.Errorf("/etc/group has no group %d:\n%s", gid, fsys["etc/group"].data)
	}

	// No shell or busybox: nothing to exec into.
	for p, f := range fsys {
		if base := path.Base(p); base == "sh" || base == "bash" || base == "ash" || base == "dash" || base == "busybox" {
			t.Errorf("image contains a shell: /%s (%c)", p, f.hdr.Typeflag)
		}
	}

	// The entrypoint, every command the manifests run and the agent the database pods'
	// init container runs: static, executable, owned by root and not writable by the
	// image's user.
	commands := map[string]bool{cfg.Config.Entrypoint[0]: true, provisioner.AgentImageBinary: true}
	deployments := operatorDeployments(t)
	if len(deployments) < len(imagebuild.Operators) {
		t.Fatalf("found %d Deployments in manifests/operators, want at least %d", len(deployments), len(imagebuild.Operators))
	}
	for file, d := range deployments {
		pod := d.Spec.Template.Spec
		containers := append(slices.Clone(pod.InitContainers), pod.Containers...)
		for _, c := range containers {
			where := file + " container " + c.Name
			if c.Image != ref {
				t.Errorf("%s: image %q, want the pinned %q (%s)", where, c.Image, ref, imagebuild.TagFile)
			}
			if len(c.Command) == 0 {
				t.Errorf("%s: no command; the image's entrypoint would run %v", where, cfg.Config.Entrypoint)
				continue
			}
			commands[c.Command[0]] = true
			// The manifests rely on the image's numeric non-root user (checked above).
			if !nonRoot(pod.SecurityContext, c.SecurityContext) {
				t.Errorf("%s: runAsNonRoot is not set", where)
			}
			if u := runAsUser(pod.SecurityContext, c.SecurityContext); u != nil && *u != int64(uid) {
				t.Logf("%s: runAsUser %d differs from the image user %d", where, *u, uid)
			}
		}
	}
	for _, b := range imagebuild.Binaries {
		if p := path.Join(imagebuild.BinDir, b); !commands[p] {
			t.Errorf("neither a manifest nor the database pods run %s", p)
		}
	}
	for cmd := range commands {
		f, ok := fsys[strings.TrimPrefix(path.Clean(cmd), "/")]
		switch {
		case !ok:
			t.Errorf("%s: not in the image", cmd)
			continue
		case f.hdr.Typeflag != tar.TypeReg:
			t.Errorf("%s: type %c, want a regular file", cmd, f.hdr.Typeflag)
			continue
		case f.hdr.Mode&0o111 != 0o111:
			t.Errorf("%s: mode %o, not executable by all", cmd, f.hdr.Mode)
		case f.hdr.Uid != 0 || f.hdr.Mode&0o022 != 0:
			t.Errorf("%s: owner %d mode %o; the image's user could replace it", cmd, f.hdr.Uid, f.hdr.Mode)
		}
		checkStatic(t, cmd, f.data)
	}

	// And they run: -help prints the usage (the flag package exits 0 or 2).
	if runtime.GOOS != "linux" {
		t.Logf("not running the binaries on %s", runtime.GOOS)
		return
	}
	dir := t.TempDir()
	for cmd := range commands {
		exe := filepath.Join(dir, path.Base(cmd))
		if err := os.WriteFile(exe, fsys[strings.TrimPrefix(cmd, "/")].data, 0o755); err != nil {
			t.Fatal(err)
		}
		runCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
		out, err := exec.CommandContext(runCtx, exe, "-help").CombinedOutput()
		cancel()
		var exit *exec.ExitError
		if err != nil && !(errors.As(err, &exit) && exit.ExitCode() == 2) {
			t.Errorf("%s -help: %v\n%s", cmd, err, out)
		}
		want := "-kubeconfig"
		if cmd == provisioner.AgentImageBinary {
			want = "install DEST | run"
		}
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("%s -help does not mention %s:\n%s", cmd, want, out)
		}
	}
}

// TestBuildIsReproducible: the same binaries and time give the same image digest, and the
// layout is what the Dockerfile's final stage promises.
func TestBuildIsReproducible(t *testing.T) {
	bins := t.TempDir()
	for _, b := range imagebuild.Binaries {
		if err := os.WriteFile(filepath.Join(bins, b), []byte("not really "+b), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	opts := imagebuild.Options{BinaryDir: bins, Ref: imagebuild.Repository + ":v0.0.0-test", Arch: "arm64",
		Created: time.Date(2024, 5, 6, 7, 8, 9, 500, time.UTC)}
	var digests []v1.Hash
	for range 2 {
		img, err := imagebuild.Build(opts)
		if err != nil {
			t.Fatal(err)
		}
		d, err := img.Digest()
		if err != nil {
			t.Fatal(err)
		}
		digests = append(digests, d)
	}
	if digests[0] != digests[1] {
		t.Fatalf("two builds of the same inputs: %s and %s", digests[0], digests[1])
	}

	img, _ := imagebuild.Build(opts)
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	want := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	if !cfg.Created.Time.Equal(want) || cfg.Architecture != "arm64" || cfg.OS != "linux" {
		t.Errorf("config: created %s, platform %s/%s", cfg.Created.Time, cfg.OS, cfg.Architecture)
	}
	if cfg.Config.User != "65532:65532" || cfg.Config.WorkingDir != "/" ||
		!slices.Equal(cfg.Config.Entrypoint, []string{"/usr/local/bin/provisioner"}) {
		t.Errorf("config: %+v", cfg.Config)
	}
	for p, f := range extract(t, img) {
		if !f.hdr.ModTime.Equal(want) {
			t.Errorf("/%s: mtime %s, want %s", p, f.hdr.ModTime, want)
		}
	}

	opts.Ref = "not a reference"
	if _, err := imagebuild.Build(opts); err == nil {
		t.Error("Build accepted an invalid reference")
	}
	opts.Ref, opts.BinaryDir = imagebuild.Repository+":v0", t.TempDir()
	if _, err := imagebuild.Build(opts); err == nil {
		t.Error("Build accepted a directory without the binaries")
	}
}

// TestDockerfileMatchesImage keeps the Dockerfile (used when a daemon is present) in step
// with go.mod and with the offline image: same Go, same user, same binary paths.
func TestDockerfileMatchesImage(t *testing.T) {
	dockerfile := readFile(t, "Dockerfile")
	gomod := readFile(t, "go.mod")
	goLine := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindStringSubmatch(gomod)
	if goLine == nil {
		t.Fatal("go.mod has no go line")
	}
	if !regexp.MustCompile(`(?m)^FROM\s+(--platform=\S+\s+)?golang:` + regexp.QuoteMeta(goLine[1]) + `\b`).MatchString(dockerfile) {
		t.Errorf("Dockerfile's builder is not golang:%s (go.mod's go line)", goLine[1])
	}
	if !regexp.MustCompile(`(?m)^USER\s+` + strconv.Itoa(imagebuild.UID) + `:` + strconv.Itoa(imagebuild.GID) + `\s*$`).MatchString(dockerfile) {
		t.Errorf("Dockerfile does not set USER %d:%d", imagebuild.UID, imagebuild.GID)
	}
	for _, b := range imagebuild.Binaries {
		if !strings.Contains(dockerfile, path.Join(imagebuild.BinDir, b)) {
			t.Errorf("Dockerfile does not install %s", path.Join(imagebuild.BinDir, b))
		}
	}
	if !strings.Contains(dockerfile, "CGO_ENABLED=0") {
		t.Error("Dockerfile does not build with CGO_ENABLED=0")
	}
}

// TestKustomizationKeepsPinnedTag: manifests/kustomization.yaml must not swap the pinned
// image for another tag.
func TestKustomizationKeepsPinnedTag(t *testing.T) {
	tag, err := imagebuild.ReadTag(root)
	if err != nil {
		t.Fatal(err)
	}
	var k struct {
		Images []struct {
			Name    string `json:"name"`
			NewName string `json:"newName"`
			NewTag  string `json:"newTag"`
		} `json:"images"`
	}
	if err := yaml.Unmarshal([]byte(readFile(t, "manifests/kustomization.yaml")), &k); err != nil {
		t.Fatal(err)
	}
	for _, img := range k.Images {
		if img.Name == imagebuild.Repository && ((img.NewName != "" && img.NewName != imagebuild.Repository) || (img.NewTag != "" && img.NewTag != tag)) {
			t.Errorf("kustomization.yaml rewrites %s to %s:%s; the pinned tag is %s", img.Name, img.NewName, img.NewTag, tag)
		}
	}
}

type file struct {
	hdr  *tar.Header
	data []byte
}

// extract returns the image's flattened filesystem, keyed by path without a leading slash.
func extract(t *testing.T, img v1.Image) map[string]file {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	files := map[string]file{}
	tr := tar.NewReader(rc)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return files
		}
		if err != nil {
			t.Fatalf("extracting the image: %v", err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		files[strings.Trim(path.Clean("/"+hdr.Name), "/")] = file{hdr: hdr, data: data}
	}
}

func archiveMember(t *testing.T, archive, member string) []byte {
	t.Helper()
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err != nil {
			t.Fatalf("%s in %s: %v", member, archive, err)
		}
		if hdr.Name == member {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
	}
}

// operatorDeployments parses every Deployment in manifests/operators, keyed by file name.
func operatorDeployments(t *testing.T) map[string]*appsv1.Deployment {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(root, "manifests", "operators", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*appsv1.Deployment{}
	for _, p := range paths {
		dec := yaml.NewYAMLOrJSONDecoder(strings.NewReader(readFile(t, filepath.Join("manifests", "operators", filepath.Base(p)))), 4096)
		for i := 0; ; i++ {
			var d appsv1.Deployment
			if err := dec.Decode(&d); err == io.EOF {
				break
			} else if err != nil {
				t.Fatalf("%s: %v", p, err)
			}
			if d.Kind == "Deployment" {
				out[filepath.Base(p)+"#"+strconv.Itoa(i)] = &d
			}
		}
	}
	return out
}

func readFile(t *testing.T, rel string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, rel))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func numericUser(t *testing.T, user string) (uid, gid int) {
	t.Helper()
	u, g, ok := strings.Cut(user, ":")
	uid, err1 := strconv.Atoi(u)
	gid, err2 := strconv.Atoi(g)
	if !ok || err1 != nil || err2 != nil {
		t.Fatalf("image user %q is not numeric uid:gid; the kubelet cannot check runAsNonRoot for a name", user)
	}
	return uid, gid
}

func passwdHas(f file, uid, gid int) bool {
	for line := range strings.Lines(string(f.data)) {
		fields := strings.Split(strings.TrimSpace(line), ":")
		if len(fields) == 7 && fields[2] == strconv.Itoa(uid) && fields[3] == strconv.Itoa(gid) {
			return true
		}
	}
	return false
}

func groupHas(f file, gid int) bool {
	for line := range strings.Lines(string(f.data)) {
		fields := strings.Split(strings.TrimSpace(line), ":")
		if len(fields) == 4 && fields[2] == strconv.Itoa(gid) {
			return true
		}
	}
	return false
}

func nonRoot(pod *corev1.PodSecurityContext, c *corev1.SecurityContext) bool {
	if c != nil && c.RunAsNonRoot != nil {
		return *c.RunAsNonRoot
	}
	return pod != nil && pod.RunAsNonRoot != nil && *pod.RunAsNonRoot
}

func runAsUser(pod *corev1.PodSecurityContext, c *corev1.SecurityContext) *int64 {
	if c != nil && c.RunAsUser != nil {
		return c.RunAsUser
	}
	if pod != nil {
		return pod.RunAsUser
	}
	return nil
}

// checkStatic fails unless data is an ELF executable that needs no dynamic loader or libc.
func checkStatic(t *testing.T, name string, data []byte) {
	t.Helper()
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		t.Errorf("%s: not an ELF file: %v", name, err)
		return
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("%s: has a PT_INTERP program header: needs a dynamic loader", name)
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("%s: needs shared libraries %v", name, libs)
	}
}
