// Package credential is the only place in pgops that talks SQL about
// credentials. It sets, verifies and checks PostgreSQL role passwords:
//
//   - [SetPassword] computes a SCRAM-SHA-256 verifier locally and sends only
//     the verifier, in a transaction that switches statement logging off;
//   - [VerifyLogin] tells whether a fresh connection with given credentials
//     authenticates;
//   - [PasswordMatches] tells whether a plaintext matches the verifier a role
//     has, without changing it;
//   - [NewVerifier], [ParseVerifier], [Verifier.Matches], [SASLprep] and
//     [PreparePassword] are the pure building blocks, exact to PostgreSQL's
//     own implementation (src/common/scram-common.c, saslprep.c);
//   - [GeneratePassword] makes new passwords.
//
// Errors from functions that talk to a server are classified by [Classify]
// into ClassAuth, ClassUnreachable and ClassOther (also usable with
// errors.Is and ErrAuthFailed / ErrUnreachable).
//
// Nothing in this package logs, and no error it returns contains a password
// or a verifier.
package credential
