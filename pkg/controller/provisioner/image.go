package provisioner

import (
	"bytes"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"text/template"
)

// Defaults of the image flags.
const (
	DefaultImageRegistry    = "docker.io/library/postgres"
	DefaultImageTagTemplate = "{{.Version}}"
	// MinMajorVersion is the oldest PostgreSQL major version pgops runs: the pod's
	// configuration uses wal_keep_size, which PostgreSQL 13 introduced (12 and older
	// have wal_keep_segments and would refuse to start).
	MinMajorVersion = 13
	// MaxMajorVersion is the newest major version pgops is known to run; a newer one
	// is refused rather than started on configuration it may have changed.
	MaxMajorVersion = 18
)

// supportedRange names the supported major versions in messages for users.
var supportedRange = fmt.Sprintf("pgops runs PostgreSQL %d to %d", MinMajorVersion, MaxMajorVersion)

// versionRE is the accepted form of spec.version: a major version, optionally with a minor
// ("16", "16.4"). Distribution suffixes are a matter of the tag template, not of the version.
var versionRE = regexp.MustCompile(`^([0-9]{1,3})(?:\.([0-9]{1,3}))?$`)

// ImageVersion is what the tag template sees.
type ImageVersion struct {
	// Version is spec.version as given, e.g. "16.4".
	Version string
	// Major and Minor are its parts; Minor is "" when the version has none.
	Major string
	Minor string
}

// ImageMapper maps spec.version to a container image: "<registry>:<tag>", the tag from a
// text/template over ImageVersion.
type ImageMapper struct {
	registry string
	tag      *template.Template
}

// NewImageMapper validates registry and tagTemplate.
func NewImageMapper(registry, tagTemplate string) (*ImageMapper, error) {
	registry = strings.TrimSpace(registry)
	if registry == "" {
		return nil, fmt.Errorf("image registry must not be empty")
	}
	if strings.ContainsAny(registry, " \t\n@") {
		return nil, fmt.Errorf("image registry %q must be a repository without tag or digest", registry)
	}
	tmpl, err := template.New("tag").Option("missingkey=error").Parse(tagTemplate)
	if err != nil {
		return nil, fmt.Errorf("parsing image tag template: %w", err)
	}
	m := &ImageMapper{registry: registry, tag: tmpl}
	if _, err := m.Image("16.4"); err != nil {
		return nil, fmt.Errorf("image tag template: %w", err)
	}
	return m, nil
}

// DefaultImageMapper maps "16.4" to "docker.io/library/postgres:16.4".
func DefaultImageMapper() *ImageMapper {
	m, err := NewImageMapper(DefaultImageRegistry, DefaultImageTagTemplate)
	if err != nil {
		panic(err)
	}
	return m
}

// VersionError says why spec.version cannot be mapped; its message is meant for users.
type VersionError struct{ msg string }

func (e *VersionError) Error() string { return e.msg }

// Image returns the image for version, or a *VersionError.
func (m *ImageMapper) Image(version string) (string, error) {
	parts := versionRE.FindStringSubmatch(version)
	if parts == nil {
		return "", &VersionError{fmt.Sprintf("unsupported version %q: expected MAJOR or MAJOR.MINOR, e.g. \"16\" or \"16.4\"; %s", version, supportedRange)}
	}
	major, _ := strconv.Atoi(parts[1])
	if major < MinMajorVersion || major > MaxMajorVersion {
		return "", &VersionError{fmt.Sprintf("unsupported version %q: %s (spec.version %q to %q, optionally with a minor version)", version, supportedRange, strconv.Itoa(MinMajorVersion), strconv.Itoa(MaxMajorVersion))}
	}
	var buf bytes.Buffer
	if err := m.tag.Execute(&buf, ImageVersion{Version: version, Major: parts[1], Minor: parts[2]}); err != nil {
		return "", fmt.Errorf("rendering image tag for version %q: %w", version, err)
	}
	tag := buf.String()
	if !tagRE.MatchString(tag) {
		return "", &VersionError{fmt.Sprintf("version %q renders the invalid image tag %q", version, tag)}
	}
	return m.registry + ":" + tag, nil
}

// tagRE is the Docker tag grammar.
var tagRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)

// DefaultAgentImage is the operator image of this release, from which the pods' init
// container installs the agent (pkg/agent). Set --agent-image to the same image the
// operators run from when it comes from another registry or a mirror. Its tag is
// hack/image-tag's (a test checks).
const DefaultAgentImage = "ghcr.io/pgops/pgops:v0.1.0"
