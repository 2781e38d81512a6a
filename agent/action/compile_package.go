package action

import (
	"context"

	"github.com/compleat/compleat/agent/protocol"
)

// compilePackage compiles one package and uploads the result (see package
// compile).
func (a *Actions) compilePackage(ctx context.Context, req protocol.CompilePackageRequest) (protocol.CompilePackageResult, error) {
	return a.d.Compiler.Compile(ctx, req)
}
