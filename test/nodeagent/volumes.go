package nodeagent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Default file modes of the kubelet's ConfigMap, Secret, projected and downward-API
// volumes.
const defaultVolumeFileMode = 0o644

// pvcDir is where the data of a PersistentVolumeClaim lives: per namespace, claim
// name and claim UID, so it outlives pods (a StatefulSet pod deleted and recreated
// finds its data again) and a claim deleted and created again starts empty.
func (a *Agent) pvcDir(namespace, claim string, uid string) string {
	return filepath.Join(a.rootDir, "volumes", "pvc", namespace, claim+"_"+uid)
}

// podDir holds a pod's emptyDirs and the files of its ConfigMap/Secret volumes; it is
// removed with the pod.
func (a *Agent) podDir(uid string) string { return filepath.Join(a.rootDir, "pods", uid) }

// isFileVolume reports volumes whose content the agent writes from API objects. They
// are mounted read-only, as the kubelet does.
func isFileVolume(v *corev1.Volume) bool {
	return v.ConfigMap != nil || v.Secret != nil || v.Projected != nil || v.DownwardAPI != nil
}

// prepareVolume returns the host directory (or file) backing volume v of the pod,
// creating it. File volumes are written afresh into a new directory per call
// (generation gen), so a container (re)start sees current ConfigMap and Secret
// content while a running sibling container keeps what it mounted.
func (w *podWorker) prepareVolume(ctx context.Context, v *corev1.Volume, gen int) (string, error) {
	a, pod := w.agent, w.pod()
	base := filepath.Join(a.podDir(string(pod.UID)), "volumes")
	switch {
	case v.EmptyDir != nil:
		dir := filepath.Join(base, "empty-dir", v.Name)
		return dir, a.makeDir(dir, 0o777, a.volumeOwner(pod))
	case v.HostPath != nil:
		p := v.HostPath.Path
		if v.HostPath.Type != nil {
			switch *v.HostPath.Type {
			case corev1.HostPathDirectoryOrCreate:
				if err := os.MkdirAll(p, 0o755); err != nil {
					return "", err
				}
			case corev1.HostPathFileOrCreate:
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					return "", err
				}
				f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY, 0o644)
				if err != nil {
					return "", err
				}
				f.Close()
			}
		}
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("hostPath volume %s: %w", v.Name, err)
		}
		return p, nil
	case v.PersistentVolumeClaim != nil:
		return w.claimDir(ctx, v.PersistentVolumeClaim.ClaimName)
	case v.Ephemeral != nil:
		return w.claimDir(ctx, pod.Name+"-"+v.Name)
	case isFileVolume(v):
		dir := filepath.Join(base, "files", v.Name, fmt.Sprint(gen))
		if err := os.RemoveAll(dir); err != nil {
			return "", err
		}
		if err := a.makeDir(dir, 0o755, a.volumeOwner(pod)); err != nil {
			return "", err
		}
		return dir, w.writeFileVolume(ctx, v, dir)
	}
	return "", fmt.Errorf("volume %s: unsupported volume type (the node agent supports emptyDir, hostPath, persistentVolumeClaim, ephemeral, configMap, secret, projected, downwardAPI)", v.Name)
}

// claimDir returns the directory of the pod's claim, creating it (mode 0700, owned by
// the agent's user) on first use.
func (w *podWorker) claimDir(ctx context.Context, claim string) (string, error) {
	a, pod := w.agent, w.pod()
	pvc, err := a.client.CoreV1().PersistentVolumeClaims(pod.Namespace).Get(ctx, claim, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("persistentVolumeClaim %s: %w", claim, err)
	}
	if pvc.DeletionTimestamp != nil {
		return "", fmt.Errorf("persistentVolumeClaim %s is being deleted", claim)
	}
	dir := a.pvcDir(pod.Namespace, claim, string(pvc.UID))
	if _, err := os.Stat(dir); err == nil {
		return dir, nil
	}
	return dir, a.makeDir(dir, 0o700, a.volumeOwner(w.pod()))
}

// makeDir creates dir (and parents) and gives it mode and owner o. A group other than
// the user's own (an fsGroup) gets the owner's access and keeps new files its own, as
// a volume plugin's fsGroup ownership does.
func (a *Agent) makeDir(dir string, mode os.FileMode, o owner) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if o.fsGroup {
		mode |= (mode & 0o700 >> 3) | os.ModeSetgid
	}
	if err := os.Chown(dir, o.uid, o.gid); err != nil {
		return err
	}
	// After the chown, which clears the setgid bit.
	return os.Chmod(dir, mode)
}

// fileEntry is one file of a ConfigMap, Secret, projected or downward-API volume.
type fileEntry struct {
	path string
	data []byte
	mode os.FileMode
}

// keyFiles selects the files of a ConfigMap or Secret: all keys, or just items.
func keyFiles(data map[string][]byte, items []corev1.KeyToPath, defaultMode *int32, optionalSource bool, what string) ([]fileEntry, error) {
	mode := os.FileMode(defaultVolumeFileMode)
	if defaultMode != nil {
		mode = os.FileMode(*defaultMode)
	}
	var out []fileEntry
	if len(items) == 0 {
		for _, k := range sortedKeys(data) {
			out = append(out, fileEntry{path: k, data: data[k], mode: mode})
		}
		return out, nil
	}
	for _, it := range items {
		d, ok := data[it.Key]
		if !ok {
			if optionalSource {
				continue
			}
			return nil, fmt.Errorf("%s has no key %q", what, it.Key)
		}
		m := mode
		if it.Mode != nil {
			m = os.FileMode(*it.Mode)
		}
		out = append(out, fileEntry{path: it.Path, data: d, mode: m})
	}
	return out, nil
}

func configMapData(cm *corev1.ConfigMap) map[string][]byte {
	m := map[string][]byte{}
	for k, v := range cm.Data {
		m[k] = []byte(v)
	}
	for k, v := range cm.BinaryData {
		m[k] = v
	}
	return m
}

// writeFileVolume writes the files of a ConfigMap, Secret, projected or downward-API
// volume into dir.
func (w *podWorker) writeFileVolume(ctx context.Context, v *corev1.Volume, dir string) error {
	a, pod := w.agent, w.pod()
	var files []fileEntry
	add := func(f []fileEntry, err error) error {
		files = append(files, f...)
		return err
	}
	configMap := func(name string, items []corev1.KeyToPath, mode *int32, opt *bool) error {
		cm, err := a.client.CoreV1().ConfigMaps(pod.Namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			if apierrors.IsNotFound(err) && optional(opt) {
				return nil
			}
			return fmt.Errorf("volume %s: configmap %s: %w", v.Name, name, err)
		}
		return add(keyFiles(configMapData(cm), items, mode, optional(opt), "configmap "+name))
	}
	secret := func(name string, items []corev1.KeyToPath, mode *int32, opt *bool) error {
		s, err := a.client.CoreV1().Secrets(pod.Namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			if apierrors.IsNotFound(err) && optional(opt) {
				return nil
			}
			return fmt.Errorf("volume %s: secret %s: %w", v.Name, name, err)
		}
		return add(keyFiles(s.Data, items, mode, optional(opt), "secret "+name))
	}
	downward := func(items []corev1.DownwardAPIVolumeFile, defMode *int32) error {
		for _, it := range items {
			var val string
			var err error
			switch {
			case it.FieldRef != nil:
				val, err = fieldValue(it.FieldRef.FieldPath, pod, w.podIP.String(), a.hostIP)
			case it.ResourceFieldRef != nil:
				ctr := &corev1.Container{}
				if len(pod.Spec.Containers) > 0 {
					ctr = &pod.Spec.Containers[0]
				}
				val, err = resourceValue(it.ResourceFieldRef, pod, ctr, a.allocatable)
			}
			if err != nil {
				return fmt.Errorf("volume %s: %w", v.Name, err)
			}
			mode := os.FileMode(defaultVolumeFileMode)
			if defMode != nil {
				mode = os.FileMode(*defMode)
			}
			if it.Mode != nil {
				mode = os.FileMode(*it.Mode)
			}
			files = append(files, fileEntry{path: it.Path, data: []byte(val), mode: mode})
		}
		return nil
	}

	var err error
	switch {
	case v.ConfigMap != nil:
		err = configMap(v.ConfigMap.Name, v.ConfigMap.Items, v.ConfigMap.DefaultMode, v.ConfigMap.Optional)
	case v.Secret != nil:
		err = secret(v.Secret.SecretName, v.Secret.Items, v.Secret.DefaultMode, v.Secret.Optional)
	case v.DownwardAPI != nil:
		err = downward(v.DownwardAPI.Items, v.DownwardAPI.DefaultMode)
	case v.Projected != nil:
		mode := v.Projected.DefaultMode
		for _, src := range v.Projected.Sources {
			switch {
			case src.ConfigMap != nil:
				err = configMap(src.ConfigMap.Name, src.ConfigMap.Items, mode, src.ConfigMap.Optional)
			case src.Secret != nil:
				err = secret(src.Secret.Name, src.Secret.Items, mode, src.Secret.Optional)
			case src.DownwardAPI != nil:
				err = downward(src.DownwardAPI.Items, mode)
			case src.ServiceAccountToken != nil:
				err = w.serviceAccountToken(ctx, src.ServiceAccountToken, mode, &files)
			}
			if err != nil {
				break
			}
		}
	}
	if err != nil {
		return err
	}
	for _, f := range files {
		if err := a.writeVolumeFile(dir, f, a.volumeOwner(w.pod())); err != nil {
			return fmt.Errorf("volume %s: %w", v.Name, err)
		}
	}
	return nil
}

// serviceAccountToken mints a token bound to the pod with the TokenRequest API, as
// the kubelet does for the kube-api-access-* volume the ServiceAccount admission
// plugin adds to every pod.
func (w *podWorker) serviceAccountToken(ctx context.Context, src *corev1.ServiceAccountTokenProjection, mode *int32, files *[]fileEntry) error {
	a, pod := w.agent, w.pod()
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		ExpirationSeconds: src.ExpirationSeconds,
		BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
	}}
	if src.Audience != "" {
		tr.Spec.Audiences = []string{src.Audience}
	}
	tr, err := a.client.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(ctx, sa, tr, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("token for serviceaccount %s: %w", sa, err)
	}
	m := os.FileMode(defaultVolumeFileMode)
	if mode != nil {
		m = os.FileMode(*mode)
	}
	*files = append(*files, fileEntry{path: src.Path, data: []byte(tr.Status.Token), mode: m})
	return nil
}

// writeVolumeFile writes one file below dir, refusing paths that leave it.
func (a *Agent) writeVolumeFile(dir string, f fileEntry, o owner) error {
	clean := filepath.Clean("/" + f.path)[1:]
	if clean == "" || strings.HasPrefix(f.path, "/") || strings.Contains(f.path, "..") {
		return errors.New("invalid file path " + f.path)
	}
	p := filepath.Join(dir, clean)
	for d := filepath.Dir(p); d != dir && strings.HasPrefix(d, dir); d = filepath.Dir(d) {
		if err := a.makeDir(d, 0o755, o); err != nil {
			return err
		}
	}
	if err := os.WriteFile(p, f.data, f.mode.Perm()); err != nil {
		return err
	}
	if err := os.Chmod(p, f.mode.Perm()); err != nil {
		return err
	}
	return os.Chown(p, o.uid, o.gid)
}
