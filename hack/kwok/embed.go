// Package kwok carries the Stage configuration for kwok, the fake kubelet of the local
// control plane. The YAML lives next to this file so it can also be handed to a kwok
// binary by hand (kwok --config hack/kwok/stages.yaml); Go code embeds it so callers
// need no path to the checkout.
package kwok

import _ "embed"

// Stages is the content of stages.yaml: node, pod and volume stages for kwok --config.
//
//go:embed stages.yaml
var Stages []byte

// VolumeProvisioner is the provisioner name the volume stages in Stages act on: PVCs of
// any StorageClass with this provisioner are provisioned and bound by kwok.
const VolumeProvisioner = "kwok.x-k8s.io/volume"
