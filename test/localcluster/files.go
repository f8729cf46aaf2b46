package localcluster

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	mathrand "math/rand/v2"
	"net"
	"os"
	"sync"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

var (
	// portsMu guards handedOut: ports given to any cluster of this process, so two
	// clusters started concurrently in one test binary never get the same port even
	// though each port's probe listener is closed before the component binds it.
	portsMu   sync.Mutex
	handedOut = map[int]bool{}
)

// freePorts returns n distinct TCP ports on 127.0.0.1 that were free a moment ago. All
// probe listeners stay open until every port is chosen, so the kernel cannot return
// the same port twice within one call.
func freePorts(n int) ([]int, error) {
	portsMu.Lock()
	defer portsMu.Unlock()
	var listeners []net.Listener
	defer func() {
		for _, l := range listeners {
			l.Close()
		}
	}()
	var ports []int
	for len(ports) < n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("pick a free port: %w", err)
		}
		listeners = append(listeners, l)
		port := l.Addr().(*net.TCPAddr).Port
		if handedOut[port] {
			continue
		}
		handedOut[port] = true
		ports = append(ports, port)
	}
	return ports, nil
}

// writeServiceAccountKey writes a fresh RSA key pair in PEM: the private key signs
// ServiceAccount tokens (apiserver, controller-manager), the public key verifies them.
func writeServiceAccountKey(keyPath, pubPath string) error {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	pubDER, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return err
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	if err := os.WriteFile(keyPath, keyPEM, 0o600); err != nil {
		return err
	}
	return os.WriteFile(pubPath, pubPEM, 0o644)
}

// randomToken returns 32 random bytes, hex-encoded.
func randomToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// writeTokenFile writes the static token file (--token-auth-file) that makes token an
// admin: user "admin" in group system:masters, which RBAC lets do anything; and the
// tokens of others.
func writeTokenFile(path, token string, others []identity) error {
	lines := token + `,admin,admin,"system:masters"` + "\n"
	for _, id := range others {
		lines += id.tokenFileLine() + "\n"
	}
	return os.WriteFile(path, []byte(lines), 0o600)
}

// writeKubeconfig writes cfg (host, bearer token, CA or insecure) as a kubeconfig file.
func writeKubeconfig(path string, cfg *rest.Config) error {
	const name = "pgops-local"
	kc := clientcmdapi.NewConfig()
	kc.Clusters[name] = &clientcmdapi.Cluster{
		Server:                   cfg.Host,
		CertificateAuthorityData: cfg.CAData,
		InsecureSkipTLSVerify:    cfg.Insecure,
	}
	kc.AuthInfos[name] = &clientcmdapi.AuthInfo{Token: cfg.BearerToken}
	kc.Contexts[name] = &clientcmdapi.Context{Cluster: name, AuthInfo: name, Namespace: "default"}
	kc.CurrentContext = name
	return clientcmd.WriteToFile(*kc, path)
}

var (
	cidrMu       sync.Mutex
	cidrsHandOut = map[int]bool{}
)

// RandomLoopbackCIDR returns a /16 inside 127.0.0.0/8, 127.N.0.0/16 with N picked at
// random in [10, 250], never the same twice in one process. Use it for
// Options.ServiceCIDR and PodCIDR when clusters run in
// parallel test binaries on one machine: their ClusterIPs and pod IPs are real
// addresses that local processes listen on, so two clusters with the defaults would
// collide. It panics once all 241 ranges are handed out.
func RandomLoopbackCIDR() string {
	cidrMu.Lock()
	defer cidrMu.Unlock()
	const lo, hi = 10, 250
	if len(cidrsHandOut) > hi-lo {
		panic("localcluster: RandomLoopbackCIDR: every range is handed out")
	}
	for {
		n := lo + mathrand.IntN(hi-lo+1)
		if !cidrsHandOut[n] {
			cidrsHandOut[n] = true
			return fmt.Sprintf("127.%d.0.0/16", n)
		}
	}
}
