package localcluster

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/client-go/rest"
)

// What a cluster with real nodes (Options.RealNodes) gives them: a token per kubelet in
// group system:nodes, which the Node authorizer confines to its own node's objects; a
// token for kube-proxy (user system:kube-proxy, bound to system:node-proxier by RBAC's
// defaults); and a CA whose client certificate the API server presents to kubelets (for
// exec, logs and port-forward), which the kubelets trust.

const kubeProxyUser = "system:kube-proxy"

// identity is a static token of the cluster's users besides admin, one line of
// --token-auth-file each.
type identity struct {
	user, uid, token string
	groups           []string
}

func (id identity) tokenFileLine() string {
	line := fmt.Sprintf("%s,%s,%s", id.token, id.user, id.uid)
	if len(id.groups) > 0 {
		line += fmt.Sprintf(",%q", strings.Join(id.groups, ","))
	}
	return line
}

// nodeIdentities are a kubelet's per name of opts.RealNodes, and kube-proxy's.
func nodeIdentities(nodes []string) ([]identity, error) {
	var ids []identity
	for _, n := range nodes {
		t, err := randomToken()
		if err != nil {
			return nil, err
		}
		ids = append(ids, identity{user: "system:node:" + n, uid: "node-" + n, token: t, groups: []string{"system:nodes"}})
	}
	if len(nodes) > 0 {
		t, err := randomToken()
		if err != nil {
			return nil, err
		}
		ids = append(ids, identity{user: kubeProxyUser, uid: "kube-proxy", token: t})
	}
	return ids, nil
}

// NodeKubeconfig is the kubeconfig the kubelet of node name (one of Options.RealNodes)
// runs with.
func (c *Cluster) NodeKubeconfig(name string) string {
	return c.path("nodes", name+".kubeconfig")
}

// KubeProxyKubeconfig is kube-proxy's kubeconfig (with Options.RealNodes).
func (c *Cluster) KubeProxyKubeconfig() string { return c.path("nodes", "kube-proxy.kubeconfig") }

// KubeletClientCAFile is the CA kubelets trust for client certificates: the API server's
// client certificate for kubelets is signed by it (with Options.RealNodes).
func (c *Cluster) KubeletClientCAFile() string { return c.path("pki", "kubelet-client-ca.crt") }

func (c *Cluster) kubeletClientCert() (cert, key string) {
	return c.path("pki", "apiserver-kubelet-client.crt"), c.path("pki", "apiserver-kubelet-client.key")
}

// writeNodeKubeconfigs writes each node identity's kubeconfig, trusting what the admin
// config trusts.
func (c *Cluster) writeNodeKubeconfigs(ids []identity) error {
	if err := os.MkdirAll(c.path("nodes"), 0o700); err != nil {
		return err
	}
	for _, id := range ids {
		cfg := rest.AnonymousClientConfig(c.adminConfig)
		cfg.BearerToken = id.token
		path := c.KubeProxyKubeconfig()
		if name, ok := strings.CutPrefix(id.user, "system:node:"); ok {
			path = c.NodeKubeconfig(name)
		}
		if err := writeKubeconfig(path, cfg); err != nil {
			return err
		}
	}
	return nil
}

// writeKubeletClientPKI writes a CA and the API server's client certificate for kubelets,
// in group system:masters, so the kubelets' webhook authorizer allows it exec, logs and
// port-forward.
func (c *Cluster) writeKubeletClientPKI() error {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "pgops-local-kubelet-client-ca"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "kube-apiserver-kubelet-client", Organization: []string{"system:masters"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	certPath, keyPath := c.kubeletClientCert()
	files := []struct {
		path string
		data []byte
		mode os.FileMode
	}{
		{c.KubeletClientCAFile(), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o644},
		{certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644},
		{keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600},
	}
	for _, f := range files {
		if err := os.MkdirAll(filepath.Dir(f.path), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(f.path, f.data, f.mode); err != nil {
			return err
		}
	}
	return nil
}
