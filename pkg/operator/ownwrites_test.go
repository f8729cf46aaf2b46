package operator

import (
	"testing"

	"github.com/stretchr/testify/assert"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func configMap(rv, data string) *corev1.ConfigMap {
	return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "x", ResourceVersion: rv}, Data: map[string]string{"v": data}}
}

func TestOwnWritesUntilTheCacheCatchesUp(t *testing.T) {
	var w OwnWrites[*corev1.ConfigMap]
	// Two writes in a row (a patch, then a status write) from what the cache showed at "1".
	w.Remember("1", configMap("2", "patched"))
	w.Remember("2", configMap("3", "written"))

	for _, stale := range []string{"1", "2"} {
		got := w.Newest(configMap(stale, "cached"))
		assert.Equal(t, "written", got.Data["v"], "a cache at %s has not seen the writes", stale)
	}
	got := w.Newest(configMap("3", "cached"))
	assert.Equal(t, "cached", got.Data["v"], "the cache caught up")
	got = w.Newest(configMap("1", "cached"))
	assert.Equal(t, "cached", got.Data["v"], "forgotten once the cache caught up")

	// Someone else wrote after us: the cache shows their version, which is newer.
	w.Remember("3", configMap("4", "ours"))
	got = w.Newest(configMap("5", "theirs"))
	assert.Equal(t, "theirs", got.Data["v"])

	// A fake API server without resourceVersions: nothing is remembered.
	w.Remember("", configMap("", "ours"))
	got = w.Newest(configMap("", "cached"))
	assert.Equal(t, "cached", got.Data["v"])

	// Copies, never the remembered object itself.
	w.Remember("6", configMap("7", "ours"))
	w.Newest(configMap("6", "cached")).Data["v"] = "changed by a sync"
	assert.Equal(t, "ours", w.Newest(configMap("6", "cached")).Data["v"])
}
