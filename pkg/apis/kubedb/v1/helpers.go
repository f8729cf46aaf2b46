package v1

// ActiveAuthSecretName is the Secret whose credential PostgreSQL accepts: status.authSecret.name
// once an operator has recorded it, else spec.authSecret.name. The two differ while a change
// of spec.authSecret.name is rotated to.
func (pg *Postgres) ActiveAuthSecretName() string {
	if pg.Status.AuthSecret != nil && pg.Status.AuthSecret.Name != "" {
		return pg.Status.AuthSecret.Name
	}
	if pg.Spec.AuthSecret != nil {
		return pg.Spec.AuthSecret.Name
	}
	return ""
}
