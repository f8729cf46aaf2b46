package testenv

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// CPUShares is where a machine's CPU time went, by who spent it.
type CPUShares struct {
	// User and System are the machine's busy time in user and kernel mode.
	User, System time.Duration
	// Self is this process (in a test binary, the node agent and its proxy) and Children
	// what its reaped children used: the node agent's exec probes and their tools.
	Self, Children time.Duration
	// Postgres is every process of uid 999 (the database pods' postgres user), with the
	// children each has reaped: the backends of logins and probes.
	Postgres time.Duration
}

// ReadCPUShares reads the machine's and the processes' CPU time so far.
func ReadCPUShares() (CPUShares, error) {
	var s CPUShares
	stat, err := os.ReadFile("/proc/stat")
	if err != nil {
		return s, err
	}
	line, _, _ := strings.Cut(string(stat), "\n")
	f := strings.Fields(line)
	if len(f) < 8 {
		return s, fmt.Errorf("/proc/stat: unexpected first line %q", line)
	}
	s.User = ticks(f[1]) + ticks(f[2])                 // user, nice
	s.System = ticks(f[3]) + ticks(f[6]) + ticks(f[7]) // system, irq, softirq
	self, err := procTimes("self")
	if err != nil {
		return s, err
	}
	s.Self, s.Children = self[0]+self[1], self[2]+self[3]
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, dir := range dirs {
		pid := filepath.Base(dir)
		if owner, err := procUID(pid); err != nil || owner != 999 {
			continue
		}
		if t, err := procTimes(pid); err == nil {
			s.Postgres += t[0] + t[1] + t[2] + t[3]
		}
	}
	return s, nil
}

// Cores is how many cores each share kept busy on average between s and later, over d.
func (s CPUShares) Cores(later CPUShares, d time.Duration) map[string]float64 {
	per := func(a, b time.Duration) float64 { return (b - a).Seconds() / d.Seconds() }
	return map[string]float64{
		"user": per(s.User, later.User), "system": per(s.System, later.System),
		"node-agent": per(s.Self, later.Self), "probes": per(s.Children, later.Children),
		"postgres": per(s.Postgres, later.Postgres),
	}
}

// procTimes is utime, stime, cutime and cstime of /proc/<pid>/stat.
func procTimes(pid string) ([4]time.Duration, error) {
	var t [4]time.Duration
	stat, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return t, err
	}
	fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	if len(fields) < 15 {
		return t, fmt.Errorf("/proc/%s/stat: too few fields", pid)
	}
	for i := range t {
		t[i] = ticks(fields[11+i])
	}
	return t, nil
}

func procUID(pid string) (int, error) {
	status, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		if rest, ok := strings.CutPrefix(line, "Uid:"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				return strconv.Atoi(f[0])
			}
		}
	}
	return 0, fmt.Errorf("/proc/%s/status: no Uid", pid)
}

func ticks(s string) time.Duration {
	v, _ := strconv.ParseInt(s, 10, 64)
	const clockTicks = 100 // USER_HZ on Linux
	return time.Duration(v) * time.Second / clockTicks
}
