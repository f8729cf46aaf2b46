package agent

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// Install copies the running executable to dest, executable by everyone, through a side
// file renamed into place. The pod's init container runs it from the operator image, so
// the database container runs the agent of the operators' own release without a change to
// the PostgreSQL image (the image has no cp to rely on: distroless has no shell).
func Install(dest string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	src, err := os.Open(self)
	if err != nil {
		return err
	}
	defer src.Close()
	if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(dest), "."+filepath.Base(dest)+".")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := io.Copy(tmp, src); err != nil {
		tmp.Close()
		return fmt.Errorf("copying %s: %w", self, err)
	}
	if err := tmp.Chmod(0o555); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), dest)
}
