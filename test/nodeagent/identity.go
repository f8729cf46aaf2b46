package nodeagent

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// identity is who a container's processes run as, resolved from the pod's and the
// container's securityContext as the kubelet resolves it.
type identity struct {
	uid, gid int
	// groups are the supplementary groups: fsGroup and supplementalGroups.
	groups []int
	// agentUser is set when neither securityContext names a user: the image's USER
	// would decide, which the agent cannot read, so the agent's RunAsUser (with its
	// groups from /etc/group) stands in.
	agentUser bool
	// readOnlyRoot is the container's readOnlyRootFilesystem.
	readOnlyRoot bool
}

// owner is who the agent gives a pod's volumes to; fsGroup is set when gid is the
// pod's fsGroup.
type owner struct {
	uid, gid int
	fsGroup  bool
}

// containerIdentity resolves runAsUser, runAsGroup, fsGroup, supplementalGroups and
// readOnlyRootFilesystem; the container's securityContext wins over the pod's.
func (a *Agent) containerIdentity(pod *corev1.Pod, c *corev1.Container) identity {
	id := identity{uid: a.uid, gid: a.gid, agentUser: true}
	var runAsUser, runAsGroup *int64
	if ps := pod.Spec.SecurityContext; ps != nil {
		runAsUser, runAsGroup = ps.RunAsUser, ps.RunAsGroup
		if ps.FSGroup != nil {
			id.groups = append(id.groups, int(*ps.FSGroup))
		}
		for _, g := range ps.SupplementalGroups {
			if !slices.Contains(id.groups, int(g)) {
				id.groups = append(id.groups, int(g))
			}
		}
	}
	if cs := c.SecurityContext; cs != nil {
		if cs.RunAsUser != nil {
			runAsUser = cs.RunAsUser
		}
		if cs.RunAsGroup != nil {
			runAsGroup = cs.RunAsGroup
		}
		id.readOnlyRoot = cs.ReadOnlyRootFilesystem != nil && *cs.ReadOnlyRootFilesystem
	}
	if runAsUser != nil {
		id.uid, id.agentUser = int(*runAsUser), false
		// A user without a group runs with gid 0 under a container runtime unless the
		// image's /etc/passwd says otherwise; the images pgops runs name a group, so
		// the user's own number is the closer stand-in.
		id.gid = id.uid
	}
	if runAsGroup != nil {
		id.gid = int(*runAsGroup)
	}
	return id
}

// volumeOwner is who owns the pod's emptyDir and claim directories: the pod's
// runAsUser (else the agent's user) and its fsGroup (else runAsGroup, else the agent's
// group), as a volume plugin honouring fsGroup makes them group-writable for the pod.
func (a *Agent) volumeOwner(pod *corev1.Pod) owner {
	o := owner{uid: a.uid, gid: a.gid}
	ps := pod.Spec.SecurityContext
	if ps == nil {
		return o
	}
	if ps.RunAsUser != nil {
		o.uid, o.gid = int(*ps.RunAsUser), int(*ps.RunAsUser)
	}
	if ps.RunAsGroup != nil {
		o.gid = int(*ps.RunAsGroup)
	}
	if ps.FSGroup != nil {
		o.gid, o.fsGroup = int(*ps.FSGroup), true
	}
	return o
}

// setprivIdentity is setpriv's part of the command that drops to id.
// onlyPrimaryGroup tells whether id's groups are at most its gid (fsGroup 999 with gid 999,
// say): then a uid and a gid are the whole identity.
func (id identity) onlyPrimaryGroup() bool {
	if id.agentUser {
		return false
	}
	for _, g := range id.groups {
		if g != id.gid {
			return false
		}
	}
	return true
}

func (a *Agent) setprivIdentity(id identity) []string {
	args := []string{"--reuid=" + strconv.Itoa(id.uid), "--regid=" + strconv.Itoa(id.gid)}
	switch {
	case len(id.groups) > 0:
		gs := make([]string, len(id.groups))
		for i, g := range id.groups {
			gs[i] = strconv.Itoa(g)
		}
		args = append(args, "--groups="+strings.Join(gs, ","))
	case id.agentUser:
		args = append(args, "--init-groups")
	default:
		args = append(args, "--clear-groups")
	}
	return args
}

// imageUser is the account name the images the agent knows give their numeric user:
// the official postgres images have postgres (uid 999).
func imageUser(image string) string {
	if imageRepoBase(image) == "postgres" {
		return "postgres"
	}
	return ""
}

// imageRepoBase is the last path element of image's repository: "postgres" for
// "docker.io/library/postgres:16.4".
func imageRepoBase(image string) string {
	repo := image
	if i := strings.IndexByte(repo, '@'); i >= 0 {
		repo = repo[:i]
	}
	if i := strings.LastIndexByte(repo, ':'); i >= 0 && !strings.Contains(repo[i:], "/") {
		repo = repo[:i]
	}
	return repo[strings.LastIndexByte(repo, '/')+1:]
}

// accountFiles stands in for the image's /etc/passwd and /etc/group where the machine
// has no account of id's uid: a container runtime shows the image's files, in which the
// official postgres image has postgres as 999:999, and initdb and peer authentication
// look the running user up by uid. It returns the mounts (none when the machine's
// files already name the uid), written below dir.
func (a *Agent) accountFiles(id identity, image, dir string) ([]mount, error) {
	if id.agentUser {
		return nil, nil
	}
	passwd, err := os.ReadFile("/etc/passwd")
	if err != nil {
		return nil, err
	}
	if hasID(passwd, 2, id.uid) {
		return nil, nil
	}
	name := imageUser(image)
	if name == "" {
		name = "uid" + strconv.Itoa(id.uid)
	}
	group, err := os.ReadFile("/etc/group")
	if err != nil {
		return nil, err
	}
	// The image's account comes first, so a lookup by name finds it before a machine
	// account of the same name.
	entry := fmt.Sprintf("%s:x:%d:%d:%s:/:/bin/sh\n", name, id.uid, id.gid, name)
	passwd = append([]byte(entry), withoutName(passwd, name)...)
	if !hasID(group, 2, id.gid) {
		group = append([]byte(fmt.Sprintf("%s:x:%d:\n", name, id.gid)), withoutName(group, name)...)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var mounts []mount
	for file, data := range map[string][]byte{"passwd": passwd, "group": group} {
		p := filepath.Join(dir, file)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			return nil, err
		}
		mounts = append(mounts, mount{src: p, dst: "/etc/" + file, file: true, readOnly: true})
	}
	slices.SortFunc(mounts, func(x, y mount) int { return strings.Compare(x.dst, y.dst) })
	return mounts, nil
}

// hasID reports whether a passwd or group file has a line whose field (0-based) is id.
func hasID(file []byte, field, id int) bool {
	s := bufio.NewScanner(bytes.NewReader(file))
	for s.Scan() {
		f := strings.Split(s.Text(), ":")
		if len(f) > field && f[field] == strconv.Itoa(id) {
			return true
		}
	}
	return false
}

// withoutName drops the lines of a passwd or group file naming name.
func withoutName(file []byte, name string) []byte {
	var out bytes.Buffer
	s := bufio.NewScanner(bytes.NewReader(file))
	for s.Scan() {
		if strings.HasPrefix(s.Text(), name+":") {
			continue
		}
		out.WriteString(s.Text() + "\n")
	}
	return out.Bytes()
}
