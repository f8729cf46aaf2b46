package testenv

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// CPUShares is the machine's busy CPU time so far.
type CPUShares struct {
	// User and System are the machine's busy time in user and kernel mode.
	User, System time.Duration
}

// ReadCPUShares reads the machine's CPU time so far.
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
	return s, nil
}

// Cores is how many cores the machine kept busy on average between s and later, over d.
func (s CPUShares) Cores(later CPUShares, d time.Duration) map[string]float64 {
	return map[string]float64{"user": CoresBusy(s.User, later.User, d), "system": CoresBusy(s.System, later.System, d)}
}

// CoresBusy is how many cores CPU time growing from a to b over d kept busy on average.
func CoresBusy(a, b, d time.Duration) float64 { return (b - a).Seconds() / d.Seconds() }

func ticks(s string) time.Duration {
	v, _ := strconv.ParseInt(s, 10, 64)
	const clockTicks = 100 // USER_HZ on Linux
	return time.Duration(v) * time.Second / clockTicks
}
