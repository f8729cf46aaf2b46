package testenv

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// Operator is an operator binary running as a local process, as it would in its pod.
type Operator struct {
	Name        string
	HealthAddr  string
	MetricsAddr string
	cmd         *exec.Cmd
	exited      chan struct{}
	exitErr     error
}

// StartOperator runs binary with a kubeconfig for cfg and extra flags. Its output goes to
// logFile. The caller stops it with Stop or Kill.
func StartOperator(name, binary string, cfg *rest.Config, workDir string, logFile io.Writer, extraArgs ...string) (*Operator, error) {
	kubeconfig := filepath.Join(workDir, name+".kubeconfig")
	if err := WriteKubeconfig(kubeconfig, cfg); err != nil {
		return nil, err
	}
	healthAddr, err := freeLoopbackAddr()
	if err != nil {
		return nil, err
	}
	metricsAddr, err := freeLoopbackAddr()
	if err != nil {
		return nil, err
	}
	args := append([]string{
		"--kubeconfig=" + kubeconfig,
		"--health-addr=" + healthAddr,
		"--metrics-addr=" + metricsAddr,
		"--leader-election-namespace=pgops-system",
		"--v=2",
	}, extraArgs...)
	cmd := exec.Command(binary, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	op := &Operator{Name: name, HealthAddr: healthAddr, MetricsAddr: metricsAddr, cmd: cmd, exited: make(chan struct{})}
	go func() { op.exitErr = cmd.Wait(); close(op.exited) }()
	return op, nil
}

// WaitReady waits until the operator leads and its caches are synced: /readyz answers a
// plain "ok" (a standby replica answers 200 too, with a note that it waits for the Lease).
func (o *Operator) WaitReady(ctx context.Context) error {
	return wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		select {
		case <-o.exited:
			return false, fmt.Errorf("%s exited before becoming ready: %v", o.Name, o.exitErr)
		default:
		}
		resp, err := http.Get("http://" + o.HealthAddr + "/readyz")
		if err != nil {
			return false, nil
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode == http.StatusOK && string(body) == "ok", nil
	})
}

// Stop sends SIGTERM and waits for a clean exit; it returns the exit error.
func (o *Operator) Stop(timeout time.Duration) error {
	_ = o.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-o.exited:
		return o.exitErr
	case <-time.After(timeout):
		o.Kill()
		return fmt.Errorf("%s did not exit within %s of SIGTERM", o.Name, timeout)
	}
}

// Kill ends the operator with SIGKILL, as a node failure or OOM kill would.
func (o *Operator) Kill() {
	_ = syscall.Kill(-o.cmd.Process.Pid, syscall.SIGKILL)
	<-o.exited
}

// WriteKubeconfig writes cfg's server, CA and bearer token as a kubeconfig file.
func WriteKubeconfig(path string, cfg *rest.Config) error {
	const name = "pgops"
	kc := clientcmdapi.NewConfig()
	kc.Clusters[name] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData, InsecureSkipTLSVerify: cfg.Insecure}
	kc.AuthInfos[name] = &clientcmdapi.AuthInfo{Token: cfg.BearerToken}
	kc.Contexts[name] = &clientcmdapi.Context{Cluster: name, AuthInfo: name}
	kc.CurrentContext = name
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return clientcmd.WriteToFile(*kc, path)
}

func freeLoopbackAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// Usage is what an operator process has used so far.
type Usage struct {
	// CPU is user plus system time.
	CPU time.Duration
	// RSS is the resident set now, PeakRSS its high-water mark, in bytes.
	RSS, PeakRSS int64
}

// Usage reads the operator's CPU time and memory from /proc.
func (o *Operator) Usage() (Usage, error) { return ProcessUsage(o.cmd.Process.Pid) }

// ProcessUsage reads a process's CPU time and memory from /proc.
func ProcessUsage(pid int) (Usage, error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return Usage{}, err
	}
	// Fields after the parenthesised command name; utime and stime are the 14th and 15th.
	fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	if len(fields) < 13 {
		return Usage{}, fmt.Errorf("/proc/%d/stat: too few fields", pid)
	}
	utime, _ := strconv.ParseInt(fields[11], 10, 64)
	stime, _ := strconv.ParseInt(fields[12], 10, 64)
	const clockTicks = 100 // USER_HZ on Linux
	u := Usage{CPU: time.Duration(utime+stime) * time.Second / clockTicks}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Usage{}, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			u.RSS = kb << 10
		case "VmHWM:":
			u.PeakRSS = kb << 10
		}
	}
	return u, nil
}

// MachineBusy reads how much CPU time the machine has spent busy (not idle or waiting for
// I/O) and in all, over all cores, since boot.
func MachineBusy() (busy, total time.Duration, err error) {
	stat, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, err
	}
	line, _, _ := strings.Cut(string(stat), "\n")
	fields := strings.Fields(line)
	if len(fields) < 8 || fields[0] != "cpu" {
		return 0, 0, fmt.Errorf("/proc/stat: unexpected first line %q", line)
	}
	const clockTicks = 100
	for i, f := range fields[1:] {
		v, _ := strconv.ParseInt(f, 10, 64)
		d := time.Duration(v) * time.Second / clockTicks
		total += d
		if i != 3 && i != 4 { // idle, iowait
			busy += d
		}
	}
	return busy, total, nil
}
