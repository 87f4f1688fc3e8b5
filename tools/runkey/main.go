// Command fma-runkey opens a cosign private key once and writes the release run's own copy of it.
//
// Every cosign process that signs opens its key: an scrypt derivation with the cost the key was
// written with (cosign generate-key-pair: N=2^16, about a quarter second of CPU). A release starts a
// cosign process per image for its signatures and one per manifest and attestation, several of them
// on the slowest image's chain after its push. The password of the run's copy is random (32 bytes from
// the release, never stored), so the copy is written with the lowest cost cosign accepts (N=2^15): a
// cost that only slows a guess of a password, and a random password is not guessed. The key itself,
// its format and the signatures made with it are cosign's.
//
//	COSIGN_PASSWORD=<the key's> FMA_RUN_KEY_PASSWORD=<the copy's> fma-runkey KEY OUT
//
// KEY is a file, or env://NAME for a PEM held in that variable (as cosign's --key takes it). OUT is
// created (never overwritten), mode 0600. The key's public half is printed on stdout as PEM, the text
// `cosign public-key` prints for it. A key that does not open is one line on stderr and exit code 1:
// "wrong password: ..." when the password does not open it, "not a cosign private key: ..." else.
// `fma-runkey version` prints the build stamp.
package main

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/secure-systems-lab/go-securesystemslib/encrypted"
)

// build is the hash of this program's sources, set by scripts/tools.sh (-ldflags -X main.build=...).
var build = "dev"

// The PEM block types cosign writes and reads for an encrypted private key.
var keyTypes = map[string]bool{
	"ENCRYPTED SIGSTORE PRIVATE KEY": true,
	"ENCRYPTED COSIGN PRIVATE KEY":   true,
}

type keyError struct{ msg string }

func (e keyError) Error() string { return e.msg }

func readKey(ref string) ([]byte, error) {
	if name, ok := strings.CutPrefix(ref, "env://"); ok {
		value, set := os.LookupEnv(name)
		if !set {
			return nil, keyError{fmt.Sprintf("not a cosign private key: %s is not set", name)}
		}
		return []byte(value), nil
	}
	return os.ReadFile(ref)
}

// runKey opens the encrypted key pemText with password and returns the run's copy, encrypted with
// runPassword, and the public half as PEM.
func runKey(pemText, password, runPassword []byte) (copyPEM, publicPEM []byte, err error) {
	block, _ := pem.Decode(pemText)
	if block == nil || !keyTypes[block.Type] {
		return nil, nil, keyError{"not a cosign private key: no ENCRYPTED SIGSTORE PRIVATE KEY block"}
	}
	der, err := encrypted.Decrypt(block.Bytes, password)
	if err != nil {
		if strings.Contains(err.Error(), "decryption failed") {
			return nil, nil, keyError{"wrong password: " + err.Error()}
		}
		return nil, nil, keyError{"not a cosign private key: " + err.Error()}
	}
	private, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, nil, keyError{"not a cosign private key: " + err.Error()}
	}
	signer, ok := private.(crypto.Signer)
	if !ok {
		return nil, nil, keyError{"not a cosign private key: it cannot sign"}
	}
	public, err := x509.MarshalPKIXPublicKey(signer.Public())
	if err != nil {
		return nil, nil, keyError{"not a cosign private key: " + err.Error()}
	}
	sealed, err := encrypted.EncryptWithCustomKDFParameters(der, runPassword, encrypted.Legacy)
	if err != nil {
		return nil, nil, err
	}
	copyPEM = pem.EncodeToMemory(&pem.Block{Type: block.Type, Bytes: sealed})
	publicPEM = pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: public})
	return copyPEM, publicPEM, nil
}

func run(args []string) error {
	if len(args) == 1 && args[0] == "version" {
		fmt.Println("fma-runkey", build)
		return nil
	}
	if len(args) != 2 {
		return errors.New("usage: fma-runkey KEY OUT (COSIGN_PASSWORD and FMA_RUN_KEY_PASSWORD in the environment)")
	}
	runPassword := os.Getenv("FMA_RUN_KEY_PASSWORD")
	if len(runPassword) < 32 {
		return errors.New("FMA_RUN_KEY_PASSWORD must be a random password of at least 32 characters")
	}
	pemText, err := readKey(args[0])
	if err != nil {
		return err
	}
	copyPEM, publicPEM, err := runKey(pemText, []byte(os.Getenv("COSIGN_PASSWORD")), []byte(runPassword))
	if err != nil {
		return err
	}
	out, err := os.OpenFile(args[1], os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := out.Write(copyPEM); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	_, err = os.Stdout.Write(publicPEM)
	return err
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "fma-runkey: "+strings.ReplaceAll(err.Error(), "\n", " "))
		os.Exit(1)
	}
}
