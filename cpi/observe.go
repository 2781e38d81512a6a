package cpi

import (
	"context"
	"path"
	"time"

	"google.golang.org/grpc"
)

// CallObserver is told the method name (e.g. "CreateVM"), the duration and
// the outcome of every CPI call made through a client it observes. err is
// the call's error as the caller sees it (typed: errors.Is works).
type CallObserver func(method string, took time.Duration, err error)

// ObserveCalls returns a gRPC client interceptor that reports every CPI
// call to obs. It sits on the connection, not on the Go interface, so a
// method added to the contract later is observed without a line changed
// here. The host installs it (host.Config.Observe).
func ObserveCalls(obs CallObserver) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, fullMethod string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		method := path.Base(fullMethod)
		start := time.Now()
		err := invoker(ctx, fullMethod, req, reply, cc, opts...)
		var typed error
		if err != nil {
			typed = fromStatus(method, err)
		}
		obs(method, time.Since(start), typed)
		return err
	}
}
