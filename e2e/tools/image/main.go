// Command nhi-image builds the local node's container images from static binaries, with
// go-containerregistry, as image tarballs that `ctr images import` loads into containerd: nothing
// is pulled, and no registry is involved.
//
//	nhi-image build --out FILE --tag REF [--file SRC:DST[:MODE]]... [--passwd]
//	    [--user U] [--entrypoint PATH] [--cmd ARG]... [--expose PORT]... [--label K=V]...
//	nhi-image config FILE     prints the image's config (user, entrypoint, cmd, ports, labels)
//
// --passwd adds /etc/passwd and /etc/group with root and nonroot (65532), as distroless has.
// Every file and the image's creation time are fixed, so the same inputs make the same image.
package main

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(v string) error { *l = append(*l, v); return nil }

const passwd = "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"
const group = "root:x:0:\nnonroot:x:65532:\n"

var epoch = time.Unix(0, 0).UTC()

type entry struct {
	path string
	mode int64
	data []byte
}

func layer(entries []entry) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dirs := map[string]bool{}
	for _, e := range entries {
		parts := strings.Split(strings.TrimPrefix(e.path, "/"), "/")
		for i := 1; i < len(parts); i++ {
			d := strings.Join(parts[:i], "/") + "/"
			if dirs[d] {
				continue
			}
			dirs[d] = true
			if err := tw.WriteHeader(&tar.Header{Name: d, Typeflag: tar.TypeDir, Mode: 0o755, ModTime: epoch}); err != nil {
				return nil, err
			}
		}
		hdr := &tar.Header{Name: strings.TrimPrefix(e.path, "/"), Typeflag: tar.TypeReg, Mode: e.mode, Size: int64(len(e.data)), ModTime: epoch}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	data := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
}

func build(args []string) error {
	fs := flag.NewFlagSet("build", flag.ExitOnError)
	out := fs.String("out", "", "image tarball to write")
	tag := fs.String("tag", "", "the image's name, e.g. nhi.dev/nhi-operator:dev")
	user := fs.String("user", "", "user[:group]")
	withPasswd := fs.Bool("passwd", false, "add /etc/passwd and /etc/group (root, nonroot 65532)")
	var files, entrypoint, cmd, expose, labels list
	fs.Var(&files, "file", "SRC:DST[:MODE] (octal mode, default 0755)")
	fs.Var(&entrypoint, "entrypoint", "an entrypoint argument (repeat)")
	fs.Var(&cmd, "cmd", "a cmd argument (repeat)")
	fs.Var(&expose, "expose", "an exposed port, e.g. 8080 or 8080/tcp (repeat)")
	fs.Var(&labels, "label", "KEY=VALUE (repeat)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" || *tag == "" {
		return fmt.Errorf("--out and --tag are required")
	}
	var entries []entry
	for _, f := range files {
		parts := strings.Split(f, ":")
		if len(parts) < 2 || len(parts) > 3 {
			return fmt.Errorf("--file %q: want SRC:DST[:MODE]", f)
		}
		mode := int64(0o755)
		if len(parts) == 3 {
			m, err := strconv.ParseInt(parts[2], 8, 32)
			if err != nil {
				return fmt.Errorf("--file %q: mode: %w", f, err)
			}
			mode = m
		}
		data, err := os.ReadFile(parts[0])
		if err != nil {
			return err
		}
		entries = append(entries, entry{parts[1], mode, data})
	}
	if *withPasswd {
		entries = append(entries, entry{"/etc/passwd", 0o644, []byte(passwd)}, entry{"/etc/group", 0o644, []byte(group)})
	}
	l, err := layer(entries)
	if err != nil {
		return err
	}
	img, err := mutate.AppendLayers(empty.Image, l)
	if err != nil {
		return err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Created = "linux", "amd64", v1.Time{Time: epoch}
	cf.Config.User = *user
	cf.Config.Entrypoint = entrypoint
	cf.Config.Cmd = cmd
	cf.Config.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	if len(expose) > 0 {
		cf.Config.ExposedPorts = map[string]struct{}{}
		for _, p := range expose {
			if !strings.Contains(p, "/") {
				p += "/tcp"
			}
			cf.Config.ExposedPorts[p] = struct{}{}
		}
	}
	if len(labels) > 0 {
		cf.Config.Labels = map[string]string{}
		for _, kv := range labels {
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				return fmt.Errorf("--label %q: want KEY=VALUE", kv)
			}
			cf.Config.Labels[k] = v
		}
	}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return err
	}
	ref, err := name.NewTag(*tag)
	if err != nil {
		return err
	}
	return tarball.WriteToFile(*out, ref, img)
}

func config(path string) error {
	img, err := tarball.ImageFromPath(path, nil)
	if err != nil {
		return err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return err
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(cf.Config)
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: nhi-image build ... | config FILE")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "build":
		err = build(os.Args[2:])
	case "config":
		if len(os.Args) != 3 {
			err = fmt.Errorf("usage: nhi-image config FILE")
		} else {
			err = config(os.Args[2])
		}
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "nhi-image:", err)
		os.Exit(1)
	}
}
