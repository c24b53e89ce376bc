//go:build tools

// Package tools pins the Pulumi CLI this project builds (scripts/install-pulumi.sh):
// a wrapper module does not inherit pkg/v3's replace lines, so `go build` of the CLI's
// main package works here where `go install ...@version` refuses it
// (shared/facts/pulumi-cli.md).
package tools

import (
	_ "github.com/pulumi/pulumi/pkg/v3/cmd/pulumi"
)
