module nhi.dev/e2e/interop/gotls

go 1.26
