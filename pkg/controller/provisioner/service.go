package provisioner

import (
	"context"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/util/retry"
	"k8s.io/klog/v2"

	kubedbv1 "github.com/pgops/pgops/pkg/apis/kubedb/v1"
)

func serviceTemplate(pg *kubedbv1.Postgres, alias kubedbv1.ServiceAlias) *kubedbv1.NamedServiceTemplateSpec {
	for i := range pg.Spec.ServiceTemplates {
		if pg.Spec.ServiceTemplates[i].Alias == alias {
			return &pg.Spec.ServiceTemplates[i]
		}
	}
	return nil
}

// desiredGoverningService is the headless Service giving pods stable DNS names.
func desiredGoverningService(pg *kubedbv1.Postgres) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{
			Name:            governingServiceName(pg),
			Namespace:       pg.Namespace,
			Labels:          ownedLabels(pg),
			OwnerReferences: []metav1.OwnerReference{ownerRef(pg)},
		},
		Spec: corev1.ServiceSpec{
			Type:                     corev1.ServiceTypeClusterIP,
			ClusterIP:                corev1.ClusterIPNone,
			Selector:                 selectorLabels(pg),
			PublishNotReadyAddresses: true,
			Ports: []corev1.ServicePort{{
				Name: "db", Port: PostgresPort, TargetPort: intstr.FromInt32(PostgresPort), Protocol: corev1.ProtocolTCP,
			}},
		},
	}
}

// desiredRoleService is the primary ("<name>") or standby ("<name>-standby") Service, with the
// user's serviceTemplate for that alias applied.
func desiredRoleService(pg *kubedbv1.Postgres, alias kubedbv1.ServiceAlias) *corev1.Service {
	// The primary Service selects ordinal 0 by the label the StatefulSet controller puts
	// on every pod, not by the role label the provisioner adds: a primary recreated while
	// the database is paused (a credential rotation restarts it) must be reachable at once.
	name, roleSelector := primaryServiceName(pg), map[string]string{appsv1.StatefulSetPodNameLabel: pg.Name + "-0"}
	if alias == kubedbv1.StandbyServiceAlias {
		name, roleSelector = standbyServiceName(pg), map[string]string{LabelRole: RoleStandby}
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{
			Name:            name,
			Namespace:       pg.Namespace,
			Labels:          ownedLabels(pg),
			OwnerReferences: []metav1.OwnerReference{ownerRef(pg)},
		},
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeClusterIP,
			Selector: mergeMaps(selectorLabels(pg), roleSelector),
			Ports: []corev1.ServicePort{{
				Name: string(alias), Port: PostgresPort, TargetPort: intstr.FromInt32(PostgresPort), Protocol: corev1.ProtocolTCP,
			}},
		},
	}
	tmpl := serviceTemplate(pg, alias)
	if tmpl == nil {
		return svc
	}
	svc.Labels = mergeMaps(map[string]string{}, tmpl.Metadata.Labels, ownedLabels(pg))
	if len(tmpl.Metadata.Annotations) > 0 {
		svc.Annotations = mergeMaps(nil, tmpl.Metadata.Annotations)
	}
	if tmpl.Spec.Type != "" {
		svc.Spec.Type = tmpl.Spec.Type
	}
	if len(tmpl.Spec.Ports) > 0 {
		svc.Spec.Ports = nil
		for _, p := range tmpl.Spec.Ports {
			name := p.Name
			if name == "" {
				name = string(alias)
			}
			sp := corev1.ServicePort{Name: name, Port: p.Port, TargetPort: intstr.FromInt32(PostgresPort), Protocol: corev1.ProtocolTCP}
			if svc.Spec.Type == corev1.ServiceTypeNodePort || svc.Spec.Type == corev1.ServiceTypeLoadBalancer {
				sp.NodePort = p.NodePort
			}
			svc.Spec.Ports = append(svc.Spec.Ports, sp)
		}
	}
	if svc.Spec.Type == corev1.ServiceTypeNodePort || svc.Spec.Type == corev1.ServiceTypeLoadBalancer {
		svc.Spec.ExternalTrafficPolicy = tmpl.Spec.ExternalTrafficPolicy
	}
	if svc.Spec.Type == corev1.ServiceTypeLoadBalancer {
		svc.Spec.LoadBalancerSourceRanges = tmpl.Spec.LoadBalancerSourceRanges
	}
	return svc
}

// ensureServices creates or updates the primary and governing Services and the standby
// Service when replicas > 1 (deleting it otherwise). The primary Service comes first: pods
// find the primary through the environment variable the kubelet derives from it.
func (c *Controller) ensureServices(ctx context.Context, pg *kubedbv1.Postgres) error {
	if err := c.ensureService(ctx, pg, desiredRoleService(pg, kubedbv1.PrimaryServiceAlias)); err != nil {
		return err
	}
	if err := c.ensureService(ctx, pg, desiredGoverningService(pg)); err != nil {
		return err
	}
	if replicas(pg) > 1 {
		return c.ensureService(ctx, pg, desiredRoleService(pg, kubedbv1.StandbyServiceAlias))
	}
	return c.deleteOwned(ctx, pg, "Service", standbyServiceName(pg))
}

func (c *Controller) ensureService(ctx context.Context, pg *kubedbv1.Postgres, want *corev1.Service) error {
	cur, err := c.serviceLister.Services(pg.Namespace).Get(want.Name)
	if apierrors.IsNotFound(err) {
		_, err = c.kubeClient.CoreV1().Services(pg.Namespace).Create(ctx, want, metav1.CreateOptions{FieldManager: FieldManager})
		if err == nil {
			klog.FromContext(ctx).Info("Created service", "service", klog.KObj(want))
			c.recorder.Eventf(pg, corev1.EventTypeNormal, ReasonServiceCreated, "Created service %s", want.Name)
			return nil
		}
		if !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("creating service %s/%s: %w", pg.Namespace, want.Name, err)
		}
		cur, err = c.kubeClient.CoreV1().Services(pg.Namespace).Get(ctx, want.Name, metav1.GetOptions{})
	}
	if err != nil {
		return fmt.Errorf("reading service %s/%s: %w", pg.Namespace, want.Name, err)
	}
	if err := c.checkOwned(pg, cur, "Service"); err != nil {
		return err
	}
	if merged := mergeService(cur, want); equality.Semantic.DeepEqual(merged, cur) {
		return nil
	}
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		latest, err := c.kubeClient.CoreV1().Services(pg.Namespace).Get(ctx, want.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		_, err = c.kubeClient.CoreV1().Services(pg.Namespace).Update(ctx, mergeService(latest, want), metav1.UpdateOptions{FieldManager: FieldManager})
		return err
	})
}

// mergeService returns cur with the fields the provisioner owns set from want; fields the API
// server allocates (clusterIP, nodePorts not asked for, healthCheckNodePort) are kept.
func mergeService(cur, want *corev1.Service) *corev1.Service {
	out := cur.DeepCopy()
	out.Labels = mergeMaps(out.Labels, want.Labels)
	if len(want.Annotations) > 0 {
		out.Annotations = mergeMaps(out.Annotations, want.Annotations)
	}
	out.Spec.Type = want.Spec.Type
	out.Spec.Selector = want.Spec.Selector
	out.Spec.PublishNotReadyAddresses = want.Spec.PublishNotReadyAddresses
	nodePorts := want.Spec.Type == corev1.ServiceTypeNodePort || want.Spec.Type == corev1.ServiceTypeLoadBalancer
	ports := make([]corev1.ServicePort, len(want.Spec.Ports))
	for i, p := range want.Spec.Ports {
		ports[i] = p
		if !nodePorts {
			ports[i].NodePort = 0
			continue
		}
		if p.NodePort == 0 {
			for _, old := range cur.Spec.Ports {
				if old.Port == p.Port {
					ports[i].NodePort = old.NodePort
				}
			}
		}
	}
	out.Spec.Ports = ports
	if nodePorts {
		out.Spec.ExternalTrafficPolicy = want.Spec.ExternalTrafficPolicy
		if out.Spec.ExternalTrafficPolicy == "" {
			out.Spec.ExternalTrafficPolicy = cur.Spec.ExternalTrafficPolicy
		}
	} else {
		out.Spec.ExternalTrafficPolicy = ""
		out.Spec.HealthCheckNodePort = 0
	}
	out.Spec.LoadBalancerSourceRanges = want.Spec.LoadBalancerSourceRanges
	return out
}

// deleteOwned deletes the named object of kind (Service, StatefulSet, ConfigMap) when pg
// controls it; a missing object is fine.
func (c *Controller) deleteOwned(ctx context.Context, pg *kubedbv1.Postgres, kind, name string) error {
	var obj metav1.Object
	var err error
	switch kind {
	case "Service":
		obj, err = c.serviceLister.Services(pg.Namespace).Get(name)
	case "StatefulSet":
		obj, err = c.statefulSetLister.StatefulSets(pg.Namespace).Get(name)
	case "ConfigMap":
		obj, err = c.configMapLister.ConfigMaps(pg.Namespace).Get(name)
	case "PodDisruptionBudget":
		obj, err = c.pdbLister.PodDisruptionBudgets(pg.Namespace).Get(name)
	default:
		return fmt.Errorf("deleteOwned: unsupported kind %s", kind)
	}
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if !isOwnedBy(obj, pg) {
		return nil
	}
	uid := obj.GetUID()
	opts := metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}}
	switch kind {
	case "Service":
		err = c.kubeClient.CoreV1().Services(pg.Namespace).Delete(ctx, name, opts)
	case "StatefulSet":
		policy := metav1.DeletePropagationBackground
		opts.PropagationPolicy = &policy
		err = c.kubeClient.AppsV1().StatefulSets(pg.Namespace).Delete(ctx, name, opts)
	case "ConfigMap":
		err = c.kubeClient.CoreV1().ConfigMaps(pg.Namespace).Delete(ctx, name, opts)
	case "PodDisruptionBudget":
		err = c.kubeClient.PolicyV1().PodDisruptionBudgets(pg.Namespace).Delete(ctx, name, opts)
	}
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return fmt.Errorf("deleting %s %s/%s: %w", kind, pg.Namespace, name, err)
	}
	if err == nil {
		klog.FromContext(ctx).Info("Deleted", "kind", kind, "object", klog.KRef(pg.Namespace, name))
		c.recorder.Eventf(pg, corev1.EventTypeNormal, ReasonDeleted, "Deleted %s %s", kind, name)
	}
	return nil
}
