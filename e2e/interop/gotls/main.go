// Command gotls is the interop matrix's Go cell (e2e/test-interop.sh): Go's crypto/tls on both
// ends, with the files as a workload gets them (the agent's directory). A server requiring client
// certificates, checked against ca.crt and against crl.pem (Go's crypto/tls checks no CRL itself:
// a workload does it in VerifyPeerCertificate, as here); the client identity is accepted, the
// revoked one refused.
//
//	gotls SERVER_DIR CLIENT_DIR REVOKED_DIR HOSTNAME
package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

func readPool(path string) (*x509.CertPool, []*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	pool := x509.NewCertPool()
	var roots []*x509.Certificate
	for block, rest := pem.Decode(data); block != nil; block, rest = pem.Decode(rest) {
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, nil, err
		}
		pool.AddCert(c)
		roots = append(roots, c)
	}
	return pool, roots, nil
}

// revokedSerials reads every CRL of crl.pem whose signature one of roots verifies.
func revokedSerials(path string, roots []*x509.Certificate) (map[string]bool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	serials := map[string]bool{}
	signed := 0
	for block, rest := pem.Decode(data); block != nil; block, rest = pem.Decode(rest) {
		crl, err := x509.ParseRevocationList(block.Bytes)
		if err != nil {
			return nil, err
		}
		for _, r := range roots {
			if crl.CheckSignatureFrom(r) == nil {
				signed++
				for _, e := range crl.RevokedCertificateEntries {
					serials[e.SerialNumber.String()] = true
				}
			}
		}
	}
	if signed == 0 {
		return nil, errors.New("no CRL in crl.pem is signed by a CA of ca.crt")
	}
	return serials, nil
}

func spiffeID(c *x509.Certificate) string {
	for _, u := range c.URIs {
		if u.Scheme == "spiffe" {
			return u.String()
		}
	}
	return ""
}

func serverConfig(dir string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"))
	if err != nil {
		return nil, err
	}
	pool, roots, err := readPool(filepath.Join(dir, "ca.crt"))
	if err != nil {
		return nil, err
	}
	revoked, err := revokedSerials(filepath.Join(dir, "crl.pem"), roots)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		VerifyPeerCertificate: func(_ [][]byte, chains [][]*x509.Certificate) error {
			if revoked[chains[0][0].SerialNumber.String()] {
				return fmt.Errorf("client certificate %x is revoked", chains[0][0].SerialNumber)
			}
			return nil
		},
	}, nil
}

func clientConfig(dir, hostname string, keyFile string) (*tls.Config, error) {
	var cert tls.Certificate
	var err error
	if keyFile == "identity.pem" {
		p := filepath.Join(dir, "identity.pem")
		cert, err = tls.LoadX509KeyPair(p, p)
	} else {
		cert, err = tls.LoadX509KeyPair(filepath.Join(dir, "tls.crt"), filepath.Join(dir, keyFile))
	}
	if err != nil {
		return nil, err
	}
	pool, _, err := readPool(filepath.Join(dir, "ca.crt"))
	if err != nil {
		return nil, err
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, ServerName: hostname}, nil
}

func call(addr string, cfg *tls.Config) (string, error) {
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(conn).ReadString('\n')
	return strings.TrimSpace(line), err
}

func run(serverDir, clientDir, revokedDir, hostname string) error {
	scfg, err := serverConfig(serverDir)
	if err != nil {
		return fmt.Errorf("server files: %w", err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", scfg)
	if err != nil {
		return err
	}
	defer ln.Close()
	serverErrors := make(chan error, 8)
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			tc := conn.(*tls.Conn)
			if err := tc.Handshake(); err != nil {
				serverErrors <- err
			} else {
				fmt.Fprintln(tc, spiffeID(tc.ConnectionState().PeerCertificates[0]))
			}
			tc.Close()
		}
	}()
	addr := ln.Addr().String()
	for _, keyFile := range []string{"tls.key", "identity.pem"} {
		ccfg, err := clientConfig(clientDir, hostname, keyFile)
		if err != nil {
			return fmt.Errorf("client files (%s): %w", keyFile, err)
		}
		id, err := call(addr, ccfg)
		if err != nil || !strings.HasPrefix(id, "spiffe://") {
			return fmt.Errorf("client (%s) not accepted: %q %v", keyFile, id, err)
		}
		fmt.Printf("client (%s) accepted as %s\n", keyFile, id)
	}
	rcfg, err := clientConfig(revokedDir, hostname, "tls.key")
	if err != nil {
		return fmt.Errorf("revoked client files: %w", err)
	}
	if id, err := call(addr, rcfg); err == nil {
		return fmt.Errorf("revoked client NOT refused: %q", id)
	} else {
		fmt.Printf("revoked client refused: %v\n", err)
	}
	select {
	case err := <-serverErrors:
		fmt.Printf("server saw: %v\n", err)
		if !strings.Contains(err.Error(), "revoked") {
			return fmt.Errorf("refused for another reason: %v", err)
		}
	case <-time.After(5 * time.Second):
		return errors.New("the server saw no refusal")
	}
	return nil
}

func main() {
	if len(os.Args) != 5 {
		fmt.Fprintln(os.Stderr, "usage: gotls SERVER_DIR CLIENT_DIR REVOKED_DIR HOSTNAME")
		os.Exit(2)
	}
	if err := run(os.Args[1], os.Args[2], os.Args[3], os.Args[4]); err != nil {
		fmt.Println("FAIL:", err)
		os.Exit(1)
	}
}
