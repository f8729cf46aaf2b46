package kubenode

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Each node's kubelet puts its pods under a cgroup parent of the node's own
// (cgroupRoot), in every hierarchy: that is how a node's processes are found to stop,
// continue or kill them, and how a dead run's are found and removed.

const cgroupMount = "/sys/fs/cgroup"

// cgroupV2 reports the unified hierarchy (one tree at /sys/fs/cgroup).
func cgroupV2() bool {
	_, err := os.Stat(filepath.Join(cgroupMount, "cgroup.controllers"))
	return err == nil
}

// hierarchies are the directories cgroup paths are relative to: each v1 controller's
// mount, or the unified one.
func hierarchies() []string {
	if cgroupV2() {
		return []string{cgroupMount}
	}
	entries, _ := os.ReadDir(cgroupMount)
	var dirs []string
	for _, e := range entries {
		p := filepath.Join(cgroupMount, e.Name())
		if fi, err := os.Lstat(p); err == nil && fi.IsDir() { // not the cpu -> cpu,cpuacct links
			dirs = append(dirs, p)
		}
	}
	return dirs
}

// processHierarchy is the one whose tree is walked for processes.
func processHierarchy() string {
	if cgroupV2() {
		return cgroupMount
	}
	return filepath.Join(cgroupMount, "pids")
}

// makeCgroup creates root in every hierarchy, as the kubelet requires of its cgroupRoot;
// a cpuset cgroup starts with no CPUs or memory nodes, so it gets its parent's.
func makeCgroup(root string) error {
	if cgroupV2() {
		// Controllers must be enabled for the children of the new cgroup's parent.
		_ = os.WriteFile(filepath.Join(cgroupMount, "cgroup.subtree_control"), []byte("+cpu +cpuset +memory +pids +io"), 0o644)
		dir := filepath.Join(cgroupMount, root)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dir, "cgroup.subtree_control"), []byte("+cpu +cpuset +memory +pids +io"), 0o644)
	}
	for _, h := range hierarchies() {
		dir := filepath.Join(h, root)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		if filepath.Base(h) == "cpuset" {
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				v, err := os.ReadFile(filepath.Join(h, f))
				if err != nil {
					return err
				}
				if err := os.WriteFile(filepath.Join(dir, f), v, 0o644); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// cgroupPids lists the processes in the cgroup at rel (relative to a hierarchy) and
// every cgroup below it.
func cgroupPids(rel string) []int {
	var pids []int
	_ = filepath.WalkDir(filepath.Join(processHierarchy(), rel), func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		b, err := os.ReadFile(filepath.Join(p, "cgroup.procs"))
		if err != nil {
			return nil
		}
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				pids = append(pids, pid)
			}
		}
		return nil
	})
	slices.Sort(pids)
	return slices.Compact(pids)
}

// signalCgroup sends sig to every process in the cgroup tree at rel and returns how many
// there were.
func signalCgroup(rel string, sig syscall.Signal) int {
	pids := cgroupPids(rel)
	for _, pid := range pids {
		_ = syscall.Kill(pid, sig)
	}
	return len(pids)
}

// killCgroup SIGKILLs the cgroup tree's processes until none is left (a process can
// fork while the list is read). Stopped processes die of SIGKILL too.
func killCgroup(rel string) {
	for i := 0; i < 50 && signalCgroup(rel, syscall.SIGKILL) > 0; i++ {
		time.Sleep(100 * time.Millisecond)
	}
}

// removeCgroup removes rel and the cgroups below it in every hierarchy, deepest first.
func removeCgroup(rel string) error {
	var errs []error
	for _, h := range hierarchies() {
		var dirs []string
		_ = filepath.WalkDir(filepath.Join(h, rel), func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			if err := syscall.Rmdir(dirs[i]); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, &fs.PathError{Op: "rmdir", Path: dirs[i], Err: err})
			}
		}
	}
	return errors.Join(errs...)
}

// findCgroup returns the cgroup (relative to a hierarchy) below rel whose directory is
// named name, for example pod<uid> or a container id.
func findCgroup(rel, name string) (string, bool) {
	var found string
	_ = filepath.WalkDir(filepath.Join(processHierarchy(), rel), func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() || found != "" {
			return nil
		}
		if d.Name() == name {
			found, _ = filepath.Rel(processHierarchy(), p)
			found = "/" + found
			return filepath.SkipAll
		}
		return nil
	})
	return found, found != ""
}
