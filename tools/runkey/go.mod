module fma-release/tools/runkey

go 1.26.8

require github.com/secure-systems-lab/go-securesystemslib v0.9.1

require (
	golang.org/x/crypto v0.46.0 // indirect
	golang.org/x/sys v0.39.0 // indirect
)
